//! Backup file names: `tandem-{cluster_id}-r{revision}-{YYYYMMDDTHHMMSSZ}.backup`.
//!
//! The name says which installation a file belongs to, which revision it holds and when (UTC) it was taken,
//! so that the scheduler can skip a backup when the newest file already holds the store's revision, and
//! delete only its own cluster's oldest files — without opening any of them. The API suggests the same name
//! for on-demand backups (`Content-Disposition`), so files from both sources sort together.
//!
//! Names order by time first (the stamp has a fixed width), then by revision.

use std::time::SystemTime;

const PREFIX: &str = "tandem-";
const SUFFIX: &str = ".backup";

/// What a backup file name says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackupName {
    /// When it was taken, `YYYYMMDDTHHMMSSZ` (UTC): sorts like the time it stands for.
    pub stamp: String,
    pub revision: u64,
    pub cluster_id: String,
}

/// The file name of a backup of `cluster_id` at `revision`, taken at `time`.
pub fn file_name(cluster_id: &str, revision: u64, time: SystemTime) -> String {
    format!("{PREFIX}{cluster_id}-r{revision}-{}{SUFFIX}", utc_stamp(time))
}

/// `time` as `YYYYMMDDTHHMMSSZ` (UTC).
pub fn utc_stamp(time: SystemTime) -> String {
    tandem_cluster::node::rfc3339(time).replace(['-', ':'], "")
}

/// Reads a backup file name; `None` for any other name (including temporary `.partial` files).
pub fn parse(name: &str) -> Option<BackupName> {
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (rest, stamp) = middle.rsplit_once('-')?;
    let (cluster_id, revision) = rest.rsplit_once("-r")?;
    let stamp_ok = stamp.len() == 16
        && stamp.as_bytes()[8] == b'T'
        && stamp.ends_with('Z')
        && stamp[..8].bytes().chain(stamp[9..15].bytes()).all(|b| b.is_ascii_digit());
    if cluster_id.is_empty() || !stamp_ok || !revision.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(BackupName {
        stamp: stamp.to_string(),
        revision: revision.parse().ok()?,
        cluster_id: cluster_id.into(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let name = file_name("0123abcd", 42, time);
        assert_eq!(name, "tandem-0123abcd-r42-20231114T221320Z.backup");
        assert_eq!(
            parse(&name),
            Some(BackupName {
                stamp: "20231114T221320Z".into(),
                revision: 42,
                cluster_id: "0123abcd".into()
            })
        );
        for stranger in [
            "tandem-0123abcd-r42-20231114T221320Z.backup.partial",
            "tandem-r42-20231114T221320Z.backup",
            "tandem-abc-rX-20231114T221320Z.backup",
            "tandem-abc-r4-2023111T221320Z.backup",
            "notes.txt",
        ] {
            assert_eq!(parse(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn names_sort_by_time_then_revision() {
        let early = parse("tandem-c-r9-20230101T000000Z.backup").unwrap();
        let late = parse("tandem-c-r2-20240101T000000Z.backup").unwrap();
        assert!(early < late);
    }
}
