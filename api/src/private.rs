//! The data directory is the node's alone: the metadata store, the Raft log, the master key
//! and the cluster token live there. Folders are 0700 and files 0600 — set on what exists
//! at start, and for what this process creates afterwards through its umask (sled and
//! other libraries create files with the default mode, which the umask trims).

use std::io;
use std::path::Path;

/// From now on, this process creates files 0600 and folders 0700 (umask 077).
pub fn restrict_new_files() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail and touches
    // no memory of ours.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (and its parents) as 0700 folders.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Sets `dir` to 0700 and everything below it to 0700 (folders) or 0600 (files) — a data
/// directory made by an earlier build included. `skip` (the files folder, which may be
/// large and holds no secret of the node's) is only set 0700 itself: nothing outside the
/// node's user can enter it.
pub fn make_private(dir: &Path, skip: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
        set(dir, 0o700)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_symlink() {
                continue;
            }
            if ty.is_dir() {
                if path == skip {
                    set(&path, 0o700)?;
                } else {
                    make_private(&path, skip)?;
                }
            } else {
                set(&path, 0o600)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, skip);
    Ok(())
}
