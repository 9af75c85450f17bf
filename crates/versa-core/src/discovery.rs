//! Version discovery: which children of a base path are versions, and which of
//! them a version policy serves. Pure functions over a directory listing; the
//! listing itself is read by [`crate::source`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which of the versions found on disk to serve
/// (`FileSystemStoragePathSourceConfig.ServableVersionPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest versions; 0 is treated as 1.
    Latest(u32),
    /// Every version found.
    All,
    /// Exactly these versions, where they exist.
    Specific(Vec<i64>),
}

impl Default for VersionPolicy {
    /// Unset in a config means the single latest version.
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

/// A version the source wants served, with the directory it loads from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AspiredVersion {
    pub version: i64,
    pub path: PathBuf,
}

/// The outcome of applying a policy to a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Versions to serve, ascending.
    pub aspired: Vec<AspiredVersion>,
    /// Version numbers that several directory names parse to (e.g. `1` and `01`).
    pub duplicates: Vec<i64>,
    /// Versions a `Specific` policy asked for that are not on disk.
    pub missing: Vec<i64>,
}

/// Parses a directory name as a version number the way TensorFlow Serving does
/// (`absl::SimpleAtoi` into an int64): surrounding ASCII whitespace and one
/// leading `+` or `-` are accepted, leading zeros are accepted (`"00000123"` is
/// 123), anything else — letters, inner spaces, overflow, an empty string —
/// is not a version.
pub fn parse_version(name: &str) -> Option<i64> {
    let trimmed = name.trim_matches(|c: char| c.is_ascii_whitespace());
    let (negative, digits) = match trimmed.as_bytes().first()? {
        b'+' => (false, &trimmed[1..]),
        b'-' => (true, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Accumulate towards the sign so that i64::MIN parses without overflow.
    digits.bytes().try_fold(0i64, |acc, b| {
        let digit = i64::from(b - b'0');
        let shifted = acc.checked_mul(10)?;
        if negative { shifted.checked_sub(digit) } else { shifted.checked_add(digit) }
    })
}

/// Maps the children of a base path to versions.
///
/// Entries are cut at their first `/` (object stores may list deep paths) and
/// de-duplicated; names that are not versions are ignored. Where two names
/// parse to the same number, the one sorting last by name wins and the number
/// is reported as a duplicate. (Upstream takes the last in listing order,
/// which the filesystem does not define; sorting makes the choice repeatable.)
pub fn versions_in_listing<S: AsRef<str>>(children: &[S]) -> (BTreeMap<i64, String>, Vec<i64>) {
    let mut names: Vec<&str> = children
        .iter()
        .map(|c| {
            let c = c.as_ref();
            c.split('/').next().unwrap_or(c)
        })
        .filter(|c| !c.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();

    let mut versions = BTreeMap::new();
    let mut duplicates = Vec::new();
    for name in names {
        if let Some(version) = parse_version(name)
            && versions.insert(version, name.to_owned()).is_some()
            && !duplicates.contains(&version)
        {
            duplicates.push(version);
        }
    }
    duplicates.sort_unstable();
    (versions, duplicates)
}

/// Applies a version policy to the children of `base_path`.
///
/// * `Latest(n)`: the `max(n, 1)` highest versions.
/// * `All`: every version.
/// * `Specific(vs)`: each requested version whose directory exists, preferring
///   its canonical decimal name (`42`) over other spellings (`0042`); the rest
///   are reported in [`Selection::missing`].
pub fn select_versions<S: AsRef<str>>(
    base_path: &Path,
    children: &[S],
    policy: &VersionPolicy,
) -> Selection {
    let (versions, duplicates) = versions_in_listing(children);
    let entry = |(version, name): (&i64, &String)| AspiredVersion {
        version: *version,
        path: base_path.join(name),
    };
    let mut missing = Vec::new();
    let mut aspired: Vec<AspiredVersion> = match policy {
        VersionPolicy::Latest(n) => {
            let n = (*n).max(1) as usize;
            versions.iter().rev().take(n).map(entry).collect()
        }
        VersionPolicy::All => versions.iter().map(entry).collect(),
        VersionPolicy::Specific(requested) => {
            let mut wanted = requested.clone();
            wanted.sort_unstable();
            wanted.dedup();
            let canonical: std::collections::HashSet<&str> =
                children.iter().map(|c| c.as_ref()).collect();
            wanted
                .into_iter()
                .filter_map(|version| {
                    let decimal = version.to_string();
                    if canonical.contains(decimal.as_str()) {
                        Some(AspiredVersion { version, path: base_path.join(decimal) })
                    } else if let Some(name) = versions.get(&version) {
                        Some(AspiredVersion { version, path: base_path.join(name) })
                    } else {
                        missing.push(version);
                        None
                    }
                })
                .collect()
        }
    };
    aspired.sort();
    Selection { aspired, duplicates, missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_parse_like_simple_atoi() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1", Some(1)),
            ("42", Some(42)),
            ("00000123", Some(123)),
            ("01", Some(1)),
            ("0", Some(0)),
            ("+7", Some(7)),
            ("-3", Some(-3)),
            (" 12 ", Some(12)),
            ("\t9\n", Some(9)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("", None),
            ("   ", None),
            ("+", None),
            ("-", None),
            ("+-1", None),
            ("1 2", None),
            ("1a", None),
            ("v1", None),
            ("0x10", None),
            ("1.0", None),
            ("assets", None),
            (".tmp-3", None),
        ];
        for (name, expected) in cases {
            assert_eq!(parse_version(name), *expected, "parsing {name:?}");
        }
    }

    #[test]
    fn listing_ignores_non_numeric_and_truncates_deep_paths() {
        let (versions, duplicates) =
            versions_in_listing(&["1", "2/saved_model.pb", "2/variables/x", "assets", "README"]);
        assert_eq!(versions.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(versions[&2], "2");
        assert!(duplicates.is_empty());
    }

    #[test]
    fn duplicate_spellings_are_reported_and_one_wins() {
        let (versions, duplicates) = versions_in_listing(&["1", "01", "001", "2"]);
        assert_eq!(duplicates, vec![1]);
        assert_eq!(versions[&1], "1", "the name sorting last wins");
        assert_eq!(versions.len(), 2);
    }

    fn selected(children: &[&str], policy: VersionPolicy) -> Vec<(i64, String)> {
        select_versions(Path::new("/m"), children, &policy)
            .aspired
            .into_iter()
            .map(|a| (a.version, a.path.display().to_string()))
            .collect()
    }

    #[test]
    fn policies_select_as_upstream() {
        let disk = ["1", "2", "00000123", "7", "junk"];
        struct Case {
            policy: VersionPolicy,
            expected: Vec<(i64, &'static str)>,
        }
        let cases = vec![
            Case { policy: VersionPolicy::Latest(1), expected: vec![(123, "/m/00000123")] },
            Case {
                policy: VersionPolicy::Latest(0),
                expected: vec![(123, "/m/00000123")], // 0 is treated as 1
            },
            Case {
                policy: VersionPolicy::Latest(2),
                expected: vec![(7, "/m/7"), (123, "/m/00000123")],
            },
            Case {
                policy: VersionPolicy::Latest(10),
                expected: vec![(1, "/m/1"), (2, "/m/2"), (7, "/m/7"), (123, "/m/00000123")],
            },
            Case {
                policy: VersionPolicy::All,
                expected: vec![(1, "/m/1"), (2, "/m/2"), (7, "/m/7"), (123, "/m/00000123")],
            },
            Case {
                policy: VersionPolicy::Specific(vec![2, 7]),
                expected: vec![(2, "/m/2"), (7, "/m/7")],
            },
            Case {
                policy: VersionPolicy::Specific(vec![123]),
                expected: vec![(123, "/m/00000123")], // non-canonical spelling found by listing
            },
            Case { policy: VersionPolicy::Specific(vec![99]), expected: vec![] },
            Case { policy: VersionPolicy::Specific(vec![]), expected: vec![] },
        ];
        for case in cases {
            let expected: Vec<(i64, String)> =
                case.expected.iter().map(|(v, p)| (*v, p.to_string())).collect();
            assert_eq!(selected(&disk, case.policy.clone()), expected, "{:?}", case.policy);
        }
    }

    #[test]
    fn specific_reports_missing_versions_and_prefers_canonical_names() {
        let selection = select_versions(
            Path::new("/m"),
            &["5", "05", "6"],
            &VersionPolicy::Specific(vec![5, 8, 6, 5]),
        );
        assert_eq!(selection.missing, vec![8]);
        let paths: Vec<_> = selection.aspired.iter().map(|a| a.path.clone()).collect();
        assert_eq!(paths, vec![PathBuf::from("/m/5"), PathBuf::from("/m/6")]);
    }

    #[test]
    fn nothing_on_disk_selects_nothing() {
        for policy in
            [VersionPolicy::Latest(1), VersionPolicy::All, VersionPolicy::Specific(vec![1])]
        {
            assert!(select_versions(Path::new("/m"), &["assets"], &policy).aspired.is_empty());
        }
    }
}
