//! Just enough of the Prometheus text format to read request counters.

/// One sample: metric name, labels, value.
#[derive(Debug, PartialEq)]
pub(crate) struct Sample<'a> {
    pub(crate) name: &'a str,
    labels: Vec<(&'a str, String)>,
    pub(crate) value: f64,
}

impl Sample<'_> {
    /// The value of label `key` ("" when absent).
    pub(crate) fn label(&self, key: &str) -> &str {
        self.labels.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v.as_str())
    }
}

/// Every sample of `text`; comments and lines that do not parse are skipped.
pub(crate) fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(sample).collect()
}

fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    let (name, labels, rest) = match line.find(['{', ' ']) {
        Some(ix) if line[ix..].starts_with('{') => {
            let close = line.rfind('}')?;
            (&line[..ix], labels(&line[ix + 1..close])?, &line[close + 1..])
        }
        Some(ix) => (&line[..ix], Vec::new(), &line[ix..]),
        None => return None,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// `a="x",b="y\"z"` → pairs, escapes resolved.
fn labels(mut text: &str) -> Option<Vec<(&str, String)>> {
    let mut out = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if text.is_empty() {
            return Some(out);
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (ix, '"') => break ix,
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim(), value));
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_with_and_without_labels() {
        let text = "# HELP x y\n# TYPE versa_requests_total counter\n\
            versa_requests_total{model=\"bench\",status=\"OK\",label=\"a,\\\"b\"} 12\n\
            up 1\n\
            model_infer_request_success_total{model=\"bench\",version=\"None\"} 3.0\n\
            broken{model=\"x\" 1\n";
        let all = samples(text);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].name, "versa_requests_total");
        assert_eq!(all[0].label("status"), "OK");
        assert_eq!(all[0].label("label"), "a,\"b");
        assert_eq!(all[0].label("absent"), "");
        assert_eq!(all[0].value, 12.0);
        assert_eq!((all[1].name, all[1].value), ("up", 1.0));
        assert_eq!(all[2].value, 3.0);
    }
}
