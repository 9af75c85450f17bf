//! `/proc/<pid>/stat`: the few fields the benchmarks read (parent, group,
//! CPU times), parsed in one place. The command name (field 2) may hold
//! spaces and parentheses, so fields are counted after its last `)`.

use anyhow::Context as _;
use std::path::Path;
use std::time::Duration;

/// One process's stat line, the fields used; times in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) ppid: u32,
    pub(crate) pgrp: u32,
    /// utime + stime: the process's own CPU time.
    pub(crate) own_ticks: u64,
    /// cutime + cstime: its waited-for children's.
    pub(crate) children_ticks: u64,
}

impl Stat {
    pub(crate) fn parse(line: &str) -> Option<Self> {
        // Index 0 is field 3 (state) of proc(5).
        let fields: Vec<&str> = line.rsplit_once(')')?.1.split_whitespace().collect();
        let number = |ix: usize| fields.get(ix)?.parse::<u64>().ok();
        Some(Self {
            ppid: u32::try_from(number(1)?).ok()?,
            pgrp: u32::try_from(number(2)?).ok()?,
            own_ticks: number(11)? + number(12)?,
            children_ticks: number(13)? + number(14)?,
        })
    }

    pub(crate) fn read(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let line = std::fs::read_to_string(path)?;
        Self::parse(&line).with_context(|| format!("malformed {}", path.display()))
    }
}

/// Clock ticks as a duration.
pub(crate) fn ticks(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / rustix::param::clock_ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 11 5 20 0 1 0";
        let stat = Stat::parse(line).expect("parses");
        assert_eq!(stat, Stat { ppid: 1, pgrp: 4242, own_ticks: 10, children_ticks: 16 });
        assert!(Stat::parse("4242 (x) S 1").is_none());
    }
}
