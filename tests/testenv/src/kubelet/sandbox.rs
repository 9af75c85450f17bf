//! The container's own view of the filesystem and its identity, set up in
//! the child between fork and exec: a private mount namespace, the image's
//! rootfs under a fresh overlay (writes stay the container's), volumes and
//! the Pod's files bind-mounted into it, `chroot`, `chdir`, then supplemental
//! groups, gid and uid.
//!
//! This is the crate's only `unsafe`: `pre_exec` and the raw system calls.
//! Everything the child needs is prepared before the fork (C strings, the
//! directories to create); between fork and exec only async-signal-safe
//! system calls run, and a failure is reported as `step << 16 | errno`
//! (see [`describe_failure`]).

use anyhow::Context as _;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// One bind mount into the container.
#[derive(Debug, Clone)]
pub(crate) struct Mount {
    /// Host file or directory.
    pub(crate) source: PathBuf,
    /// Absolute path inside the container.
    pub(crate) target: String,
    pub(crate) read_only: bool,
}

/// Everything the child does before exec, decided in the parent.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The image's unpacked rootfs (the overlay's lower layer, never written).
    pub(crate) lower: PathBuf,
    /// This run's overlay directories: `upper`, `work` and `merged` are made here.
    pub(crate) run_dir: PathBuf,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) read_only_root: bool,
    pub(crate) working_dir: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) no_new_privileges: bool,
}

/// The steps that can fail in the child, for messages.
const STEPS: [&str; 10] = [
    "",
    "unshare(CLONE_NEWNS)",
    "making / private",
    "mounting the overlay rootfs",
    "creating a mount point",
    "bind-mounting a volume",
    "remounting read-only",
    "chroot",
    "chdir to the working directory",
    "setting groups, gid or uid",
];

/// A spawn error from [`Plan::apply`]'s child in words.
pub(crate) fn describe_failure(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) if code >> 16 > 0 && ((code >> 16) as usize) < STEPS.len() => {
            let errno = std::io::Error::from_raw_os_error(code & 0xffff);
            format!("{} failed: {errno}", STEPS[(code >> 16) as usize])
        }
        _ => error.to_string(),
    }
}

/// A bind mount with its paths as the child needs them.
#[derive(Debug)]
struct Prepared {
    /// Directories to create, outermost first (host paths under `merged`).
    dirs: Vec<CString>,
    source: CString,
    target: CString,
    file: bool,
    read_only: bool,
}

impl Plan {
    /// Makes the overlay directories and arranges for `command`'s child to
    /// enter the container before exec.
    pub(crate) fn apply(&self, command: &mut Command) -> anyhow::Result<()> {
        let (upper, work, merged) =
            (self.run_dir.join("upper"), self.run_dir.join("work"), self.run_dir.join("merged"));
        for dir in [&upper, &work, &merged] {
            std::fs::create_dir_all(dir)?;
        }
        for path in [&self.lower, &upper, &work] {
            let text = path.to_string_lossy();
            if text.contains([',', ':']) {
                anyhow::bail!("overlay paths may not contain ',' or ':': {text}");
            }
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            upper.display(),
            work.display()
        );
        let too_many_links = |path: &str| format!("too many levels of symbolic links: {path}");
        let mut mounts = Vec::new();
        for mount in &self.mounts {
            let inside = resolve_in(&self.lower, &mount.target)
                .with_context(|| too_many_links(&mount.target))?;
            mounts.push((inside, mount));
        }
        // Outer mounts first (by the resolved path), so a nested one lands on top.
        mounts.sort_by_key(|(inside, _)| inside.components().count());
        let mut prepared = Vec::new();
        for (inside, mount) in mounts {
            let mut dirs = Vec::new();
            let mut host = merged.clone();
            let parts: Vec<_> = inside.components().collect();
            for (i, part) in parts.iter().enumerate() {
                host.push(part);
                if i + 1 < parts.len() || mount.source.is_dir() {
                    dirs.push(c_path(&host)?);
                }
            }
            prepared.push(Prepared {
                dirs,
                source: c_path(&mount.source)?,
                target: c_path(&host)?,
                file: !mount.source.is_dir(),
                read_only: mount.read_only,
            });
        }
        let cwd = resolve_in(&self.lower, &self.working_dir)
            .with_context(|| too_many_links(&self.working_dir))?;
        let mut cwd_dirs = Vec::new();
        let mut host = merged.clone();
        for part in cwd.components() {
            host.push(part);
            cwd_dirs.push(c_path(&host)?);
        }
        let child = Child {
            overlay_options: CString::new(options)?,
            merged: c_path(&merged)?,
            mounts: prepared,
            cwd_dirs,
            read_only_root: self.read_only_root,
            cwd: c_path(&Path::new("/").join(&cwd))?,
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
            no_new_privileges: self.no_new_privileges,
        };
        #[allow(unsafe_code)]
        // SAFETY: `Child::enter` makes only async-signal-safe system calls on
        // memory allocated before the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || child.enter());
        }
        Ok(())
    }
}

/// A container path with the image's symlinks resolved inside the rootfs
/// (as `securejoin` does), so a mount never follows a link out of it.
/// Relative to the rootfs, without `..`; `None` past 40 symbolic links
/// (the kernel's ELOOP), rather than treating a link as a plain directory.
pub(crate) fn resolve_in(rootfs: &Path, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> =
        Path::new(path).components().rev().filter_map(normal).collect();
    let mut out = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            out.pop();
            continue;
        }
        let candidate = out.join(&part);
        match std::fs::read_link(rootfs.join(&candidate)) {
            Ok(_) if links >= 40 => return None,
            Ok(target) => {
                links += 1;
                if target.is_absolute() {
                    out = PathBuf::new();
                }
                pending.extend(target.components().rev().filter_map(normal));
            }
            Err(_) => out = candidate,
        }
    }
    Some(out)
}

fn normal(c: Component<'_>) -> Option<std::ffi::OsString> {
    match c {
        Component::Normal(p) => Some(p.to_owned()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    }
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    Ok(CString::new(path.as_os_str().as_bytes())?)
}

/// What runs in the child: data only, prepared by [`Plan::apply`].
#[derive(Debug)]
struct Child {
    overlay_options: CString,
    merged: CString,
    mounts: Vec<Prepared>,
    cwd_dirs: Vec<CString>,
    read_only_root: bool,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    no_new_privileges: bool,
}

/// `Err(step << 16 | errno)` when a call returned -1.
fn check(step: i32, result: libc::c_int) -> std::io::Result<()> {
    if result == -1 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
        return Err(std::io::Error::from_raw_os_error(step << 16 | (errno & 0xffff)));
    }
    Ok(())
}

#[allow(unsafe_code)]
impl Child {
    fn mkdir(path: &CString) -> std::io::Result<()> {
        // SAFETY: a valid C string; mkdir is async-signal-safe.
        let r = unsafe { libc::mkdir(path.as_ptr(), 0o755) };
        if r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return check(4, -1);
        }
        Ok(())
    }

    /// Runs between fork and exec.
    fn enter(&self) -> std::io::Result<()> {
        let null = std::ptr::null();
        // SAFETY (all blocks below): system calls on C strings and vectors
        // owned by `self`, alive until exec; none allocates or locks.
        unsafe {
            check(1, libc::unshare(libc::CLONE_NEWNS))?;
            let root = c"/";
            check(
                2,
                libc::mount(
                    null,
                    root.as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    null.cast(),
                ),
            )?;
            check(
                3,
                libc::mount(
                    c"overlay".as_ptr(),
                    self.merged.as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    self.overlay_options.as_ptr().cast(),
                ),
            )?;
        }
        for mount in &self.mounts {
            for dir in &mount.dirs {
                Self::mkdir(dir)?;
            }
            if mount.file {
                // SAFETY: as above; the descriptor is closed at once.
                unsafe {
                    let fd = libc::open(
                        mount.target.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    check(4, fd)?;
                    libc::close(fd);
                }
            }
            let flags = libc::MS_BIND | libc::MS_REC;
            // SAFETY: as above.
            unsafe {
                check(
                    5,
                    libc::mount(
                        mount.source.as_ptr(),
                        mount.target.as_ptr(),
                        null,
                        flags,
                        null.cast(),
                    ),
                )?;
                if mount.read_only {
                    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
                    check(6, libc::mount(null, mount.target.as_ptr(), null, flags, null.cast()))?;
                }
            }
        }
        for dir in &self.cwd_dirs {
            Self::mkdir(dir)?;
        }
        // SAFETY: as above.
        unsafe {
            if self.read_only_root {
                let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
                check(6, libc::mount(null, self.merged.as_ptr(), null, flags, null.cast()))?;
            }
            check(7, libc::chdir(self.merged.as_ptr()))?;
            check(7, libc::chroot(c".".as_ptr()))?;
            check(8, libc::chdir(self.cwd.as_ptr()))?;
            if self.no_new_privileges {
                check(9, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            check(9, libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            check(9, libc::setgid(self.gid))?;
            check(9, libc::setuid(self.uid))?;
            // Descriptors inherited from whoever started the kubelet (a
            // jobserver pipe, say) end at exec, as in a runtime's container.
            // Close-on-exec, not closed: the spawn's own error pipe must stay.
            // Kernels before 5.11 lack the flag; nothing else depends on it.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_targets_resolve_symlinks_inside_the_rootfs() {
        let root = tempfile::tempdir().expect("root");
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).expect("dirs");
        std::os::unix::fs::symlink("/usr/lib", r.join("lib")).expect("abs link");
        std::os::unix::fs::symlink("../../../../etc", r.join("usr/up")).expect("rel link");
        std::os::unix::fs::symlink("/", r.join("loop")).expect("root link");
        let resolve = |p: &str| resolve_in(r, p);
        assert_eq!(resolve("/lib/x").as_deref(), Some(Path::new("usr/lib/x")));
        assert_eq!(resolve("/usr/up/hosts").as_deref(), Some(Path::new("etc/hosts")), "clamped");
        assert_eq!(resolve("/loop/loop/a").as_deref(), Some(Path::new("a")));
        assert_eq!(resolve("/../../models").as_deref(), Some(Path::new("models")));
        assert_eq!(resolve("/").as_deref(), Some(Path::new("")));
        // A chain longer than the kernel follows is an error, never a
        // link left in the path (which the host would then follow).
        for i in 0..41 {
            std::os::unix::fs::symlink(format!("/l{}", i + 1), r.join(format!("l{i}"))).expect("l");
        }
        std::fs::create_dir(r.join("l41")).expect("end");
        assert_eq!(resolve("/l2/x").as_deref(), Some(Path::new("l41/x")), "39 links");
        assert_eq!(resolve("/l0/x"), None, "41 links");
    }

    #[test]
    fn child_failures_name_their_step() {
        let e = std::io::Error::from_raw_os_error(5 << 16 | libc::ENOENT);
        assert_eq!(
            describe_failure(&e),
            format!(
                "bind-mounting a volume failed: {}",
                std::io::Error::from_raw_os_error(libc::ENOENT)
            )
        );
        assert!(
            describe_failure(&std::io::Error::from_raw_os_error(libc::EPERM))
                .contains("not permitted")
        );
    }
}
