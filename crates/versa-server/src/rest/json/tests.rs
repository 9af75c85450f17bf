use super::*;

#[test]
fn parses_values_and_special_number_tokens() {
    let v = parse(r#" {"a": [1, -2.5e3, NaN, Infinity, -Infinity, true, null], "s": "x\"y\u00e9\ud83d\ude00"} "#)
        .expect("parses");
    let a = v.get("a").expect("a");
    assert_eq!(
        a,
        &Json::Array(vec![
            Json::Number("1"),
            Json::Number("-2.5e3"),
            Json::Number("NaN"),
            Json::Number("Infinity"),
            Json::Number("-Infinity"),
            Json::Bool(true),
            Json::Null,
        ])
    );
    assert_eq!(v.get("s"), Some(&Json::String(Cow::Owned("x\"yé😀".into()))));
}

#[test]
fn rejects_malformed_documents() {
    let cases = [
        ("", "JSON Parse error: The document is empty"),
        ("   ", "JSON Parse error: The document is empty"),
        ("[1,", "JSON Parse error: Unexpected end of input at offset 3"),
        ("[1 2]", "JSON Parse error: Missing a comma or ']' after an array element at offset 3"),
        (
            "{\"a\" 1}",
            "JSON Parse error: Missing a colon after a name of object member at offset 5",
        ),
        (
            "01",
            "JSON Parse error: The document root must not be followed by other values at offset 1",
        ),
        ("1.", "JSON Parse error: Miss fraction part in number at offset 2"),
        ("\"abc", "JSON Parse error: Missing a closing quotation mark in string at offset 4"),
        ("nan", "JSON Parse error: Invalid value at offset 0"),
        (
            "{} {}",
            "JSON Parse error: The document root must not be followed by other values at offset 3",
        ),
    ];
    for (input, message) in cases {
        assert_eq!(parse(input).expect_err(input).to_string(), message, "{input:?}");
    }
    let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
    assert!(parse(&deep).expect_err("deep").reason.contains("too deep"));
}

fn numbers(input: &str) -> Numbers<'_> {
    match parse(input).expect("parses") {
        Json::Numbers(n) => *n,
        other => panic!("{input:?} parsed as {other:?}"),
    }
}

#[test]
fn rectangular_number_arrays_stay_text() {
    let n = numbers(" [ [1, -2.5e3 ,NaN], [Infinity,-Infinity, 0] ] ");
    assert_eq!(n.shape(), &[2, 3]);
    assert_eq!(
        n.tokens().collect::<Vec<_>>(),
        ["1", "-2.5e3", "NaN", "Infinity", "-Infinity", "0"]
    );
    let values = n.values();
    assert_eq!(values[..2], [1.0, -2500.0]);
    assert!(values[2].is_nan());
    assert_eq!(values[3..], [f64::INFINITY, f64::NEG_INFINITY, 0.0]);
    assert_eq!(Json::Numbers(Box::new(n)).preview(), "[[1,-2.5e3,NaN],[Infinity,-Infinity,0]]");
    assert_eq!(numbers("[]").shape(), &[0]);
    assert_eq!(numbers("[[],[]]").shape(), &[2, 0]);
    assert_eq!(numbers("[[[7]]]").shape(), &[1, 1, 1]);
    assert_eq!(numbers("[[],[]]").tokens().count(), 0);
    // Inside objects too.
    let doc = parse(r#"{"instances": [{"x": [1, 2]}], "k": [3]}"#).expect("parses");
    assert!(matches!(doc.get("k"), Some(Json::Numbers(_))));
    let Some(Json::Array(rows)) = doc.get("instances") else { panic!("rows are objects") };
    assert!(matches!(rows[0].get("x"), Some(Json::Numbers(_))));
}

#[test]
fn numbers_read_in_the_scan_equal_str_parse() {
    let mut tokens: Vec<String> = [
        "0",
        "-0",
        "1",
        "-1",
        "0.1",
        "0.05882353",
        "123456789012345678",
        "1234567890123456789",
        "12345678901234567890",
        "9007199254740993",
        "9007199254740992",
        "1e22",
        "1e23",
        "1.5e-22",
        "1e-23",
        "2.2250738585072014e-308",
        "4.9e-324",
        "1e-400",
        "1e400",
        "1.7976931348623157e308",
        "0.000000000000000000000000000001",
        "3.141592653589793238462643",
        "-2.5E+3",
        "7e0",
        "1E-0",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    // A deterministic spread of shortest-round-trip and long decimals.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x >> 2);
        if f.is_finite() {
            tokens.push(format!("{f:e}"));
            tokens.push(format!("{}", (x % 10_000_000) as f64 / 1e7));
            tokens.push(format!("{:.12}", (x % 1000) as f64 * 0.37));
        }
    }
    let doc = format!("[{}]", tokens.join(","));
    let n = numbers(&doc);
    assert_eq!(n.values().len(), tokens.len());
    for (token, value) in tokens.iter().zip(n.values()) {
        let expected: f64 = token.parse().expect("valid float");
        assert_eq!(value.to_bits(), expected.to_bits(), "{token}");
    }
}

#[test]
fn anything_but_rectangular_numbers_is_a_tree() {
    for input in [
        "[1, true]",
        "[[1, 2], [3]]",
        "[[1], 2]",
        "[1, [2]]",
        "[[], [1]]",
        "[[1], []]",
        "[[[]], [[], []]]",
        "[[[]], 1]",
        "[\"1\"]",
        "[null]",
    ] {
        let parsed = parse(input).expect(input);
        assert!(matches!(parsed, Json::Array(_)), "{input:?} parsed as {parsed:?}");
    }
    // Syntax errors are the tree parser's, at the same offsets.
    for (input, message) in [
        ("[1 2]", "JSON Parse error: Missing a comma or ']' after an array element at offset 3"),
        ("[1,", "JSON Parse error: Unexpected end of input at offset 3"),
        ("[1.]", "JSON Parse error: Miss fraction part in number at offset 3"),
        ("[nan]", "JSON Parse error: Invalid value at offset 1"),
        ("[[1],[2]", "JSON Parse error: Missing a comma or ']' after an array element at offset 8"),
    ] {
        assert_eq!(parse(input).expect_err(input).to_string(), message, "{input:?}");
    }
    // Deep nesting of numbers still hits the depth limit.
    let deep = "[".repeat(MAX_DEPTH + 2) + "1" + &"]".repeat(MAX_DEPTH + 2);
    assert!(parse(&deep).expect_err("deep").reason.contains("too deep"));
    let ok = "[".repeat(MAX_DEPTH - 1) + "1" + &"]".repeat(MAX_DEPTH - 1);
    assert!(parse(&ok).is_ok());
}

#[test]
fn a_failed_scan_is_not_repeated_for_every_enclosing_level() {
    // Each level encloses a long run of numbers followed by a string:
    // without the failure mark each level would rescan the whole run.
    let levels = 100;
    let run = vec!["1"; 10_000].join(",");
    let doc = "[".repeat(levels) + &run + ",\"x\"" + &"]".repeat(levels);
    let (parsed, scanned) = parse_counting_scans(&doc, ParseBudget::UNLIMITED);
    assert!(scanned <= doc.len(), "scanned {scanned} bytes of {}", doc.len());
    let parsed = parsed.expect("parses");
    let mut inner = &parsed;
    for _ in 1..levels {
        let Json::Array(items) = inner else { panic!("tree expected") };
        inner = &items[0];
    }
    let Json::Array(items) = inner else { panic!("tree expected") };
    assert_eq!(items.len(), 10_001);
}

#[test]
fn writes_floats_like_upstream() {
    let mut out = String::new();
    for v in [1.0f32, 0.1, -2.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        write_f32(&mut out, v);
        out.push(' ');
    }
    assert_eq!(out, "1.0 0.1 -2.5 NaN Infinity -Infinity ");
}

#[test]
fn string_escapes_round_trip() {
    let original = "tab\tquote\"back\\slash\u{1}é";
    let mut out = String::new();
    write_string(&mut out, original);
    assert_eq!(parse(&out).expect("parses"), Json::String(Cow::Owned(original.into())));
}
