//! What the filesystem under a run store promises the store's claims.
//!
//! A claim is an exclusive `flock(2)` on `<run>/lock`, released by the kernel when its process
//! dies. On one machine that is always right. On shared storage it is right only where the
//! filesystem makes flock locks cluster-wide: NFS (the Linux client sends flock as a whole-file
//! lock to the server unless mounted `local_lock=flock|all` or `nolock`), Lustre mounted with
//! `flock` (not `localflock`; the default since Lustre 2.12.3), CephFS; BeeGFS only with
//! `tuneUseGlobalFileLocks = true` in the client's configuration; not Spectrum Scale (GPFS),
//! whose flock locks are reported to be per node. [`lock_scope`] reads the
//! mount table's entry for the store (a pure function, tested on mount lines); docs/cluster.md
//! gives the sources.

use std::path::{Path, PathBuf};

/// The mount a path lives on, from `/proc/self/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// `nfs4`, `lustre`, `ext4`, ...
    pub filesystem: String,
    pub options: Vec<String>,
}

/// How far the store's claims reach on its filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockScope {
    /// flock locks are seen by every node that mounts it.
    Cluster,
    /// A local filesystem: only this machine sees the store at all.
    Local,
    /// The store is shared but its locks are per node: two nodes could train the same run.
    NodeOnly { reason: String },
    /// flock fails on this mount (Lustre `noflock`): no claim can be taken.
    Unsupported { reason: String },
    /// Nothing known about this filesystem's locks.
    Unknown,
}

/// Undoes the octal escapes of `/proc/mounts` (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\'
            && index + 3 < bytes.len()
            && bytes[index + 1..index + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[index + 1] - b'0') * 64
                + (bytes[index + 2] - b'0') * 8
                + (bytes[index + 3] - b'0');
            out.push(value);
            index += 4;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` (absolute, symlinks resolved) in a mount table's text: the entry
/// with the longest mount point above it (the last one mounted wins a tie).
pub fn mount_of(mounts: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            continue;
        }
        let mount_point = PathBuf::from(unescape(fields[1]));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let longer = best.as_ref().is_none_or(|current| {
            mount_point.components().count() >= current.mount_point.components().count()
        });
        if longer {
            best = Some(Mount {
                mount_point,
                filesystem: fields[2].to_string(),
                options: fields[3].split(',').map(String::from).collect(),
            });
        }
    }
    best
}

/// The mount under `folder` (or its nearest existing parent) on this machine.
pub fn store_mount(folder: &Path) -> Option<Mount> {
    let mut existing = std::path::absolute(folder).ok()?;
    while !existing.exists() {
        existing = existing.parent()?.to_path_buf();
    }
    let resolved = std::fs::canonicalize(&existing).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mount_of(&mounts, &resolved)
}

/// `tuneUseGlobalFileLocks` in a BeeGFS client configuration's text (default `false`).
fn beegfs_global_locks(configuration: &str) -> bool {
    configuration
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter_map(|line| line.split_once('='))
        .rfind(|(key, _)| key.trim() == "tuneUseGlobalFileLocks")
        .is_some_and(|(_, value)| matches!(value.trim(), "true" | "1" | "yes"))
}

/// What a mount promises the claims. `read_file` reads a configuration a mount option names
/// (BeeGFS's `cfgFile`), so that the function stays pure in tests.
pub fn lock_scope(mount: &Mount, read_file: impl Fn(&Path) -> Option<String>) -> LockScope {
    let has = |option: &str| mount.options.iter().any(|candidate| candidate == option);
    let value_of = |key: &str| {
        mount
            .options
            .iter()
            .find_map(|option| option.strip_prefix(&format!("{key}=")))
            .map(String::from)
    };
    match mount.filesystem.as_str() {
        "nfs" | "nfs4" => {
            if let Some(local) = value_of("local_lock").filter(|value| value != "none")
                && matches!(local.as_str(), "flock" | "all")
            {
                return LockScope::NodeOnly {
                    reason: format!(
                        "NFS mounted with `local_lock={local}`: flock locks stay on each node"
                    ),
                };
            }
            if has("nolock") {
                return LockScope::NodeOnly {
                    reason: "NFS mounted with `nolock`: locks stay on each node".into(),
                };
            }
            LockScope::Cluster
        }
        "lustre" => {
            if has("localflock") {
                LockScope::NodeOnly {
                    reason: "Lustre mounted with `localflock`: flock locks stay on each node"
                        .into(),
                }
            } else if has("noflock") {
                LockScope::Unsupported {
                    reason: "Lustre mounted with `noflock`: flock fails".into(),
                }
            } else if has("flock") {
                LockScope::Cluster
            } else {
                LockScope::Unknown
            }
        }
        "beegfs" => {
            let configuration =
                value_of("cfgFile").unwrap_or_else(|| "/etc/beegfs/beegfs-client.conf".into());
            match read_file(Path::new(&configuration)) {
                Some(text) if beegfs_global_locks(&text) => LockScope::Cluster,
                Some(_) => LockScope::NodeOnly {
                    reason: format!(
                        "BeeGFS without `tuneUseGlobalFileLocks = true` in {configuration}: locks stay on each node"
                    ),
                },
                None => LockScope::Unknown,
            }
        }
        "ceph" | "fuse.ceph-fuse" => LockScope::Cluster,
        "gpfs" => LockScope::NodeOnly {
            reason: "Spectrum Scale (GPFS) is reported to keep flock locks on each node (its fcntl locks are cluster-wide)".into(),
        },
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "tmpfs" | "zfs" | "overlay" | "f2fs"
        | "ramfs" => LockScope::Local,
        _ => LockScope::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "/dev/root / ext4 rw,relatime 0 0\n\
server:/export /shared nfs4 rw,relatime,vers=4.2,hard,proto=tcp 0 0\n\
server:/old /shared/old nfs rw,vers=3,nolock 0 0\n\
10.0.0.1@tcp:/fs /lustre lustre rw,flock,lazystatfs 0 0\n\
10.0.0.1@tcp:/fs2 /scratch lustre rw,localflock 0 0\n\
beegfs_nodev /beegfs beegfs rw,relatime,cfgFile=/etc/beegfs/beegfs-client.conf 0 0\n\
tmpfs /my\\040runs tmpfs rw 0 0\n\
gpfs1 /gpfs gpfs rw,relatime 0 0\n\
cephfs /ceph ceph rw,name=admin 0 0\n";

    fn scope(path: &str, beegfs: Option<&str>) -> LockScope {
        let mount = mount_of(MOUNTS, Path::new(path)).unwrap();
        lock_scope(&mount, |_| beegfs.map(String::from))
    }

    #[test]
    fn the_longest_mount_point_above_the_store_decides() {
        assert_eq!(
            mount_of(MOUNTS, Path::new("/shared/runs"))
                .unwrap()
                .filesystem,
            "nfs4"
        );
        assert_eq!(
            mount_of(MOUNTS, Path::new("/shared/old/runs"))
                .unwrap()
                .filesystem,
            "nfs"
        );
        assert_eq!(
            mount_of(MOUNTS, Path::new("/sharedother"))
                .unwrap()
                .filesystem,
            "ext4"
        );
        assert_eq!(
            mount_of(MOUNTS, Path::new("/my runs/x"))
                .unwrap()
                .mount_point,
            PathBuf::from("/my runs")
        );
    }

    #[test]
    fn scopes_follow_the_mount_options() {
        assert_eq!(scope("/shared/runs", None), LockScope::Cluster);
        assert!(matches!(
            scope("/shared/old/runs", None),
            LockScope::NodeOnly { .. }
        ));
        assert_eq!(scope("/lustre/runs", None), LockScope::Cluster);
        assert!(matches!(
            scope("/scratch/runs", None),
            LockScope::NodeOnly { .. }
        ));
        assert_eq!(scope("/home/runs", None), LockScope::Local);
        assert!(matches!(
            scope("/gpfs/runs", None),
            LockScope::NodeOnly { .. }
        ));
        assert_eq!(scope("/ceph/runs", None), LockScope::Cluster);
        assert_eq!(scope("/beegfs/runs", None), LockScope::Unknown);
        assert!(matches!(
            scope("/beegfs/runs", Some("tuneUseGlobalFileLocks = false\n")),
            LockScope::NodeOnly { .. }
        ));
        assert_eq!(
            scope(
                "/beegfs/runs",
                Some("# x\ntuneUseGlobalFileLocks = true # on\n")
            ),
            LockScope::Cluster
        );
        let local = Mount {
            mount_point: "/n".into(),
            filesystem: "nfs".into(),
            options: vec!["vers=4.1".into(), "local_lock=flock".into()],
        };
        assert!(matches!(
            lock_scope(&local, |_| None),
            LockScope::NodeOnly { .. }
        ));
        let noflock = Mount {
            filesystem: "lustre".into(),
            options: vec!["noflock".into()],
            ..local
        };
        assert!(matches!(
            lock_scope(&noflock, |_| None),
            LockScope::Unsupported { .. }
        ));
    }

    #[test]
    fn this_machines_mount_table_holds_the_temporary_folder() {
        let folder = tempfile::tempdir().unwrap();
        let mount = store_mount(&folder.path().join("not/yet")).unwrap();
        // A relative store is found from the current directory.
        assert!(store_mount(Path::new("runs-that-do-not-exist")).is_some());
        let resolved = std::fs::canonicalize(folder.path()).unwrap();
        assert!(resolved.starts_with(&mount.mount_point), "{mount:?}");
        assert!(!mount.filesystem.is_empty());
    }
}
