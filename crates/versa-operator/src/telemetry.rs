//! Logging: `RUST_LOG` filters, `--log_format` picks one line of text or one
//! JSON object per event.
//!
//! The JSON lines are `{"timestamp", "level", "target", "fields": {...},
//! "spans": [{"name", ...fields}]}` (spans from the root), written by the
//! formatter below on `serde_json` (tracing-subscriber's own `json` feature
//! would add tracing-serde to the build for the same output).

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line of text per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: text or json")),
        }
    }
}

/// The default filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,kube=warn,tower=warn,hyper=warn";

/// Installs the global subscriber: `RUST_LOG` (else [`DEFAULT_FILTER`]) in
/// `format`, on stdout.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).init();
        }
        LogFormat::Json => builder.fmt_fields(JsonFields).event_format(JsonLines).init(),
    }
}

/// Event formatter: one JSON object per line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// Field formatter: a span's fields as a JSON object (kept in the span's
/// extensions by tracing-subscriber, read back by [`JsonLines`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        let mut spans = Vec::new();
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            let mut object = Map::new();
            object.insert("name".into(), span.name().into());
            let extensions = span.extensions();
            if let Some(Value::Object(recorded)) = extensions
                .get::<FormattedFields<JsonFields>>()
                .and_then(|f| serde_json::from_str(&f.fields).ok())
            {
                object.extend(recorded);
            }
            spans.push(Value::Object(object));
        }
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("fields".into(), Value::Object(fields.0));
        if !spans.is_empty() {
            line.insert("spans".into(), spans.into());
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = JsonVisitor::default();
        fields.record(&mut visitor);
        write!(writer, "{}", Value::Object(visitor.0))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor(serde_json::from_str(&current.fields).unwrap_or_default());
        fields.record(&mut visitor);
        current.fields = Value::Object(visitor.0).to_string();
        Ok(())
    }
}

/// Collects fields as JSON values: numbers and booleans as such, the rest
/// (`%display`, `?debug`, the message) as strings.
#[derive(Debug, Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex, PoisonError};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_level_target_fields_and_spans() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reconcile", resource = %"ml/fraud", generation = 3);
            let _entered = span.enter();
            let inner = tracing::info_span!("reload", pod = "fraud-0");
            inner.record("pod", "fraud-1");
            let _inner = inner.enter();
            tracing::warn!(retry_in = ?Duration(2), ok = false, "reconcile \"failed\"");
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0]).expect("one JSON object");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["fields"],
            serde_json::json!({"message": "reconcile \"failed\"", "retry_in": "Duration(2)", "ok": false})
        );
        assert_eq!(
            line["spans"],
            serde_json::json!([
                {"name": "reconcile", "resource": "ml/fraud", "generation": 3},
                {"name": "reload", "pod": "fraud-1"},
            ])
        );
        let timestamp = line["timestamp"].as_str().expect("timestamp");
        assert!(timestamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{timestamp}");
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Duration(u32);

    #[test]
    fn log_formats_parse() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
