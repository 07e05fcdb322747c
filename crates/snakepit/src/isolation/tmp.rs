//! The TMPDIRs of a pool under `filesystem = "plugins-readonly"`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::BuildError;

/// The directory of a pool's TMPDIRs. A root supervisor mounts a tmpfs of `tmp_size`
/// per worker slot (`w<slot>`), anew for each worker of the slot: a worker without
/// capabilities cannot map uid 0 into a user namespace of its own (that needs
/// CAP_SETFCAP), so it cannot mount one itself. Otherwise each worker mounts its own
/// (`w<pid>`) in user and mount namespaces of its own, and it goes with them.
#[derive(Debug)]
pub(super) struct TmpRoot {
    pub dir: PathBuf,
    pub per_slot: bool,
    size: u64,
    /// The uid and gid the tmpfs roots belong to (the pool's `user`).
    owner: Option<(u32, u32)>,
}

impl TmpRoot {
    pub fn new(
        dir: PathBuf,
        size: u64,
        per_slot: bool,
        owner: Option<(u32, u32)>,
        workers: usize,
    ) -> Result<TmpRoot, BuildError> {
        let fail = |what: &Path, e: &dyn std::fmt::Display| {
            BuildError::Config(format!(
                "[isolation] tmp_size cannot be enforced: the tmpfs at {} cannot be made: {e}",
                what.display()
            ))
        };
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .map_err(|e| fail(&dir, &e))?;
        let root = TmpRoot {
            dir,
            per_slot,
            size,
            owner,
        };
        if per_slot {
            for slot in 0..workers {
                let d = root.slot(slot);
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| fail(&d, &e))?;
                root.mount(slot).map_err(|e| fail(&d, &e))?;
            }
        }
        Ok(root)
    }

    fn slot(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("w{slot}"))
    }

    fn mount(&self, slot: usize) -> nix::Result<()> {
        use nix::mount::{mount, MsFlags};
        let mut opts = format!("size={},mode=0700", self.size);
        if let Some((uid, gid)) = self.owner {
            opts.push_str(&format!(",uid={uid},gid={gid}"));
        }
        mount(
            Some("tmpfs"),
            &self.slot(slot),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
    }

    fn unmount(&self, slot: usize) {
        let _ = nix::mount::umount2(&self.slot(slot), nix::mount::MntFlags::MNT_DETACH);
    }

    /// An empty tmpfs for the slot's next worker.
    /// The slot's worker is gone: so is what it wrote.
    pub fn gone(&self, slot: usize) {
        if self.per_slot {
            self.unmount(slot);
        }
    }

    pub fn fresh(&self, slot: usize) {
        if self.per_slot {
            self.unmount(slot);
            if let Err(e) = self.mount(slot) {
                tracing::warn!(slot, error = %e, "cannot mount the worker's TMPDIR");
            }
        }
    }
}

impl Drop for TmpRoot {
    fn drop(&mut self) {
        self.remove();
    }
}

impl TmpRoot {
    /// Unmounts the slots' tmpfs and removes the directory (what the workers left in
    /// them goes with it).
    pub fn remove(&self) {
        if self.per_slot {
            let slots = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
            for slot in 0..slots {
                self.unmount(slot);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
