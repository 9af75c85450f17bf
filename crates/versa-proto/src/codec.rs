//! The gRPC codec of every generated service: prost's, with one step before
//! decoding — the message's decoded size is bounded from its wire bytes
//! ([`crate::wire_budget`]), so a small message cannot make the process
//! allocate gigabytes before any handler sees it.
//!
//! The bound is process-wide ([`set_decode_limit`]); unset, messages are
//! decoded as prost alone would (clients such as the operator leave it so).
//! A server can also have each message's estimated size reserved for the
//! request decoding it ([`reserving_decoded`]), so that what decoded
//! messages hold counts against what requests in flight may hold.

use crate::wire_budget::{WireError, decoded_size};
use bytes::Buf as _;
use prost::{Message, Name};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Reserves a decoded message's estimated size, or says why it cannot be.
pub type ReserveDecoded = std::sync::Arc<dyn Fn(usize) -> Result<(), String> + Send + Sync>;

tokio::task_local! {
    static RESERVE: ReserveDecoded;
}

/// Runs `f` (a gRPC call) with every message it decodes reserved by `reserve`.
pub async fn reserving_decoded<F: std::future::Future>(reserve: ReserveDecoded, f: F) -> F::Output {
    RESERVE.scope(reserve, f).await
}

static DECODE_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static WHAT_SETS_IT: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

/// Refuse, before decoding, every message that would take more than `bytes`
/// of memory once decoded. `setting` names what set it (a flag), for errors.
pub fn set_decode_limit(bytes: usize, setting: &str) {
    DECODE_LIMIT.store(bytes, Ordering::Relaxed);
    if let Ok(mut what) = WHAT_SETS_IT.write() {
        *what = setting.to_owned();
    }
}

/// The limit in force (`usize::MAX`: none).
pub fn decode_limit() -> usize {
    DECODE_LIMIT.load(Ordering::Relaxed)
}

/// prost's codec with the decode bound.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Name + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder { _type: PhantomData }
    }
}

/// Decodes `U` once its decoded size is known to fit the limit.
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U> {
    _type: PhantomData<U>,
}

/// Checks `wire` as a `U` against `limit`.
fn check<U: Name>(wire: &[u8], limit: usize) -> Result<(), Status> {
    let Some(descriptor) = crate::text_format::find_descriptor(&U::full_name()) else {
        return Ok(());
    };
    match decoded_size(&descriptor, wire, limit) {
        Ok(estimate) => match RESERVE.try_with(|reserve| reserve(estimate)) {
            Ok(Err(reason)) => Err(Status::resource_exhausted(reason)),
            Ok(Ok(())) | Err(_) => Ok(()),
        },
        Err(WireError::TooLarge { limit }) => {
            let setting = WHAT_SETS_IT.read().map(|s| s.clone()).unwrap_or_default();
            Err(Status::resource_exhausted(format!(
                "{} would take more than {limit} bytes of memory once decoded{}",
                U::NAME,
                if setting.is_empty() { String::new() } else { format!(" ({setting})") }
            )))
        }
        Err(e @ WireError::Malformed(_)) => Err(Status::invalid_argument(e.to_string())),
    }
}

impl<U: Message + Default + Name> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let limit = decode_limit();
        if limit != usize::MAX {
            if buf.chunk().len() == buf.remaining() {
                check::<U>(buf.chunk(), limit)?;
            } else {
                let whole = buf.copy_to_bytes(buf.remaining());
                check::<U>(&whole, limit)?;
                return U::decode(whole).map(Some).map_err(|e| Status::internal(e.to_string()));
            }
        }
        U::decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
