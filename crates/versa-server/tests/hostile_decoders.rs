//! Every decoder a request reaches, fed arbitrary input: it never panics,
//! and it never holds more memory than its budget allows — measured with a
//! counting allocator, not estimated. The REST JSON parser, the REST tensor
//! builder, the TensorProto conversion, and the gRPC wire bound in front of
//! prost (whose estimate must cover what prost really allocates).

use proptest::prelude::*;
use versa_malloc::PeakCounting;
use versa_onnx::convert::{TensorBudget, tensor_from_proto};
use versa_onnx::{Signature, TensorSpec};
use versa_proto::serving::PredictRequest;
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};
use versa_server::rest::json::{self, ParseBudget};
use versa_server::rest::tensors;

#[global_allocator]
static ALLOCATOR: PeakCounting = PeakCounting;

/// What a decoder may hold beyond its budget: its own small bookkeeping
/// (nesting stacks, error messages).
const SLACK: usize = 16 << 10;

/// JSON-like text: valid documents of every shape, and their near misses.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("{}".to_owned()),
        Just("[]".to_owned()),
        Just("NaN".to_owned()),
        Just("-Infinity".to_owned()),
        any::<f64>().prop_map(|v| format!("{v}")),
        any::<i64>().prop_map(|v| v.to_string()),
        "[a-z\\\\\"é\\u{1F600}]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("\"\\ud83d\\ude00\\n\"".to_owned()),
        Just("{\"b64\": \"aGk=\"}".to_owned()),
    ];
    let tree = leaf.prop_recursive(6, 256, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..6).prop_map(|m| {
                let members: Vec<String> =
                    m.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    });
    prop_oneof![
        8 => tree.clone().prop_map(|t| format!("{{\"instances\": {t}}}")),
        4 => tree.clone().prop_map(|t| format!("{{\"inputs\": {t}}}")),
        2 => tree.prop_map(|t| {
            // A near miss: cut short.
            let cut = t.len() / 2;
            t.char_indices().map(|(i, _)| i).find(|&i| i >= cut).map_or(t.clone(), |i| t[..i].to_owned())
        }),
        1 => any::<String>(),
        // Floods of tiny values: the tree is many times the text.
        1 => (1usize..4000).prop_map(|n| format!("{{\"instances\": [{}]}}", vec!["{}"; n].join(","))),
        1 => (1usize..4000).prop_map(|n| format!("{{\"inputs\": [{}]}}", vec!["0"; n].join(","))),
    ]
}

fn spec(alias: &str, dtype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec { alias: alias.to_owned(), dtype, shape: shape.to_vec() }
}

fn signatures() -> Vec<Signature> {
    vec![
        Signature {
            inputs: vec![spec("x", DataType::DtFloat, &[-1, 4])],
            outputs: vec![spec("y", DataType::DtFloat, &[-1, 4])],
        },
        Signature {
            inputs: vec![
                spec("a", DataType::DtString, &[-1]),
                spec("b", DataType::DtInt64, &[-1, -1]),
            ],
            outputs: vec![spec("y", DataType::DtFloat, &[-1])],
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_json_parser_stays_within_its_budget(text in json_text(), cap in 1usize..(256 << 10)) {
        let budget = ParseBudget::for_body(text.len(), cap, "--max_request_tensor_bytes");
        let (parsed, peak) = PeakCounting::measure(|| json::parse_within(&text, budget).is_ok());
        prop_assert!(peak <= budget.bytes + SLACK, "{peak} bytes for a budget of {} (parsed: {parsed})", budget.bytes);
    }

    #[test]
    fn rest_inputs_stay_within_their_tensor_budget(text in json_text(), limit in 1usize..(64 << 10)) {
        let Ok(document) = json::parse(&text) else { return Ok(()) };
        let Ok(body) = tensors::predict_body(&document) else { return Ok(()) };
        for signature in signatures() {
            let (_, peak) = PeakCounting::measure(|| {
                let mut budget = TensorBudget::new(limit, "--max_request_tensor_bytes");
                tensors::input_tensors(&signature, &body, &mut budget).map(drop)
            });
            prop_assert!(peak <= limit + SLACK, "{peak} bytes for a budget of {limit}");
        }
    }
}

fn dims() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(
        prop_oneof![
            0i64..5,
            Just(-1),
            Just(1 << 20),
            Just(1 << 40),
            Just(i64::MAX),
            Just(67_108_864)
        ],
        0..4,
    )
}

fn tensor_proto() -> impl Strategy<Value = TensorProto> {
    let dtype = prop_oneof![
        Just(DataType::DtFloat),
        Just(DataType::DtString),
        Just(DataType::DtInt64),
        Just(DataType::DtBool),
        Just(DataType::DtHalf),
        Just(DataType::DtComplex64),
    ];
    (
        dtype,
        dims(),
        any::<bool>(),
        prop::collection::vec(any::<f32>(), 0..4),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..4),
        prop::collection::vec(any::<i64>(), 0..4),
        prop::collection::vec(any::<i32>(), 0..4),
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(dtype, dims, unknown_rank, floats, strings, int64s, ints, content)| {
            TensorProto {
                dtype: dtype as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|size| tensor_shape_proto::Dim { size, name: String::new() })
                        .collect(),
                    unknown_rank,
                }),
                float_val: floats,
                string_val: strings,
                int64_val: int64s,
                half_val: ints,
                tensor_content: if dtype == DataType::DtBool { Vec::new() } else { content },
                ..TensorProto::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn tensor_protos_stay_within_their_budget(proto in tensor_proto(), rank in 0usize..4, limit in 1usize..(1 << 20)) {
        let dtype = DataType::try_from(proto.dtype).unwrap_or(DataType::DtFloat);
        let target = spec("x", dtype, &vec![-1; rank]);
        let (_, peak) = PeakCounting::measure(|| {
            let mut budget = TensorBudget::new(limit, "--max_request_tensor_bytes");
            tensor_from_proto(&proto, &target, &mut budget).map(drop)
        });
        prop_assert!(peak <= limit + SLACK, "{peak} bytes for a budget of {limit}: {proto:?}");
    }

    #[test]
    fn the_wire_bound_covers_what_prost_allocates(
        inputs in prop::collection::vec(("[a-z]{0,8}", tensor_proto()), 0..12),
        filter in prop::collection::vec("[a-z]{0,3}", 0..20),
        junk in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let request = PredictRequest {
            inputs: inputs.into_iter().collect(),
            output_filter: filter,
            ..PredictRequest::default()
        };
        let mut wire = prost::Message::encode_to_vec(&request);
        wire.extend(junk);
        check_wire(&wire)?;
    }

    #[test]
    fn arbitrary_bytes_are_scanned_as_prost_decodes_them(wire in prop::collection::vec(any::<u8>(), 0..256)) {
        check_wire(&wire)?;
    }
}

/// prost and the scan agree on what is a message, and the scan's estimate
/// covers what decoding it really holds at its peak.
fn check_wire(wire: &[u8]) -> Result<(), TestCaseError> {
    let descriptor = versa_proto::text_format::descriptor("tensorflow.serving.PredictRequest");
    let estimate = versa_proto::wire_budget::decoded_size(&descriptor, wire, usize::MAX);
    let (decoded, peak) =
        PeakCounting::measure(|| <PredictRequest as prost::Message>::decode(wire).map(drop));
    if decoded.is_ok() {
        let estimate = estimate.map_err(|e| {
            TestCaseError::fail(format!("prost accepts what the scan refuses: {e}"))
        })?;
        prop_assert!(
            peak <= estimate + 1024,
            "prost held {peak} bytes, the scan estimated {estimate}"
        );
    }
    Ok(())
}

/// Found by the property test above: a string tensor with no elements but a
/// dimension of i64::MAX made tract's allocation fail inside an `unwrap`.
#[test]
fn an_empty_tensor_with_a_huge_dimension_is_refused_not_a_panic() {
    for dtype in [DataType::DtString, DataType::DtFloat, DataType::DtComplex64] {
        for dims in [[i64::MAX, 0], [0, i64::MAX], [1 << 40, 0]] {
            let proto = TensorProto {
                dtype: dtype as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
                        .collect(),
                    unknown_rank: false,
                }),
                ..TensorProto::default()
            };
            let mut budget = TensorBudget::new(1 << 20, "--max_request_tensor_bytes");
            let result = tensor_from_proto(&proto, &spec("x", dtype, &[-1, -1]), &mut budget);
            // Reaching here is the point (no panic); no real tensor has a
            // dimension of i64::MAX, so that one is refused.
            if dims.contains(&i64::MAX) {
                assert!(result.is_err(), "{dtype:?} {dims:?} accepted");
            }
        }
    }
}
