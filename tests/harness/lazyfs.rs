//! LazyFS for the power-loss tests: a FUSE file system with its own page cache (vendored in `tools/lazyfs/`).
//! Writes stay in that cache until the file is fsynced; `lazyfs::clear-cache` drops every un-fsynced byte, as
//! a power cut would. A test SIGKILLs the processes using the mount, calls [`LazyFs::power_cut`], and restarts
//! them on the same directories.
//!
//! [`LazyFs::available`] says why the tests cannot run here (not root, no `/dev/fuse`, no LazyFS binary, no
//! `fusermount3`); the tests then print "skipped: …" and return. The binary is found through `TANDEM_LAZYFS`
//! (set by `scripts/test.sh`, which builds it with `tools/lazyfs/build.sh`), else at the place `build.sh`
//! puts it by default (`<cargo target dir>/lazyfs/lazyfs`).
//!
//! Every wait is bounded, and [`LazyFs`] unmounts on drop, panic included (declare it before the nodes that
//! use it, so that they are killed first).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long a mount and a clear-cache may take.
const MOUNT_LIMIT: Duration = Duration::from_secs(20);
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Writes a line to the real standard error, past the test harness's output capture, so that a skip is
/// seen in a plain `cargo test` run.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A mounted LazyFS.
#[derive(Debug)]
pub struct LazyFs {
    /// Where the tests put their files (the FUSE mount).
    mount: PathBuf,
    /// The real directory underneath.
    under: PathBuf,
    fifo: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Lines LazyFS writes to its "completed" FIFO (`finished::clear-cache`), read by a thread.
    completed: Receiver<String>,
    mounted: bool,
    /// Power cuts so far.
    pub cuts: u32,
    /// The LazyFS binary, to mount again after it crashed ([`LazyFs::power_cut`]).
    binary: PathBuf,
}

impl LazyFs {
    /// The LazyFS binary, or why power-loss tests cannot run on this machine.
    pub fn available() -> Result<PathBuf, String> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
        if uid.as_deref() != Some("0") {
            return Err("not running as root (LazyFS mounts a FUSE file system)".into());
        }
        if std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_err() {
            return Err("/dev/fuse is missing or cannot be opened (a container needs --device /dev/fuse \
                        --cap-add SYS_ADMIN)"
                .into());
        }
        if !command_exists("fusermount3") {
            return Err("fusermount3 is missing (Debian package fuse3; scripts/test.sh installs it)".into());
        }
        let binary = match std::env::var_os("TANDEM_LAZYFS") {
            Some(path) => PathBuf::from(path),
            None => Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("lazyfs/lazyfs"),
        };
        if !binary.is_file() {
            return Err(format!(
                "no LazyFS binary at {} (run scripts/test.sh, or tools/lazyfs/build.sh and set \
                 TANDEM_LAZYFS to the path it prints)",
                binary.display()
            ));
        }
        Ok(binary)
    }

    /// Mounts a LazyFS at `work/mnt` over `work/under`, with its config, FIFOs and log in `work`; waits until
    /// the mount is live. Err: this machine does not let it mount (the kernel refused: a container without
    /// the right to mount), a reason to skip. Panics on any other failure, or if not mounted within 20 s.
    pub fn mount(binary: &Path, work: &Path) -> Result<LazyFs, String> {
        let mount = work.join("mnt");
        let under = work.join("under");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::create_dir_all(&under).unwrap();
        let fifo = work.join("faults.fifo");
        let completed_fifo = work.join("completed.fifo");
        let log = work.join("lazyfs.log");
        for path in [&fifo, &completed_fifo] {
            let _ = std::fs::remove_file(path);
            let made = Command::new("mkfifo").arg(path).status().expect("run mkfifo");
            assert!(made.success(), "mkfifo {}", path.display());
        }
        let config = work.join("lazyfs.toml");
        // LazyFS's argument parser takes a --config-path containing "-o" (any case) for a mount option and
        // falls back to config/default.toml.
        assert!(
            !config.to_string_lossy().to_lowercase().contains("-o"),
            "LazyFS cannot take a config path containing \"-o\": {} (set TMPDIR elsewhere)",
            config.display()
        );
        std::fs::write(
            &config,
            format!(
                "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n[cache]\napply_eviction=false\n\
                 [cache.simple]\ncustom_size=\"1gb\"\nblocks_per_page=1\n[filesystem]\n\
                 log_all_operations=false\nlogfile=\"\"\n",
                fifo.display(),
                completed_fifo.display()
            ),
        )
        .unwrap();
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(&mount)
            .arg("--config-path")
            .arg(&config)
            .args(["-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", under.display()))
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        // LazyFS opens the completed FIFO for writing (blocking until a reader opens it) before it reads any
        // command: a thread holds the read end for the life of the mount and forwards each line.
        let (sender, completed) = channel();
        let reader_path = completed_fifo.clone();
        std::thread::spawn(move || {
            let Ok(file) = std::fs::File::open(&reader_path) else { return };
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut fs = LazyFs {
            mount,
            under,
            fifo,
            log,
            child: Some(child),
            completed,
            mounted: false,
            cuts: 0,
            binary: binary.to_path_buf(),
        };
        let deadline = Instant::now() + MOUNT_LIMIT;
        while !fs.is_mounted() {
            if let Some(status) = fs.child.as_mut().unwrap().try_wait().unwrap() {
                fs.child = None;
                let log = fs.log_text();
                if ["Operation not permitted", "Permission denied"]
                    .iter()
                    .any(|refusal| log.contains(refusal))
                {
                    let line = log.lines().find(|l| l.contains("not permitted") || l.contains("denied"));
                    return Err(format!("the kernel refused the FUSE mount: {}", line.unwrap_or("").trim()));
                }
                panic!("LazyFS exited before mounting ({status}):\n{log}");
            }
            if Instant::now() > deadline {
                panic!(
                    "LazyFS did not mount {} within {MOUNT_LIMIT:?}:\n{}",
                    fs.mount.display(),
                    fs.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        fs.mounted = true;
        Ok(fs)
    }

    /// The mounted directory: what the nodes' data directories go under.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The real directory under the mount (what survives a power cut is what is here after it).
    pub fn under(&self) -> &Path {
        &self.under
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let target = self.mount.to_string_lossy();
        mounts.lines().any(|line| line.split_whitespace().nth(1) == Some(target.as_ref()))
    }

    /// Sends one command and waits (bounded) for LazyFS to say it finished: `expect` is the line it writes to
    /// the completed FIFO.
    fn command(&self, command: &str, expect: &str) {
        // Drop stale lines (there should be none: commands are sent one at a time).
        while self.completed.try_recv().is_ok() {}
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.fifo)
            .unwrap_or_else(|e| panic!("opening LazyFS's FIFO {}: {e}", self.fifo.display()));
        // LazyFS reads the FIFO in 100-byte chunks and drops the last byte of each read (the newline).
        fifo.write_all(format!("{command}\n").as_bytes()).unwrap();
        let deadline = Instant::now() + COMMAND_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.completed.recv_timeout(left) {
                Ok(line) if line.trim() == expect => return,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!("LazyFS did not finish '{command}' within {COMMAND_LIMIT:?}:\n{}", self.log_text())
                }
            }
        }
    }

    /// A power cut of everything under the mount: every byte not fsynced is dropped. The processes using the
    /// mount must be dead already (SIGKILL them first).
    ///
    /// LazyFS 0.2 now and then dies right after clearing its cache ("terminate called after throwing an
    /// instance of 'std::system_error' … Resource deadlock avoided", seen once in CI on 2026-12-04, most likely
    /// racing the kernel's release of the killed processes' files): the file system then answers "Transport
    /// endpoint is not connected". That is the tool failing, not the system under test, and what it leaves
    /// in the directory underneath is exactly what a power cut leaves (everything fsynced, nothing else). So
    /// the cut waits a moment for those releases first, and if LazyFS died anyway it is mounted again over
    /// the same directory, and says so.
    pub fn power_cut(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
        self.command("lazyfs::clear-cache", "finished::clear-cache");
        self.cuts += 1;
        std::thread::sleep(Duration::from_millis(100));
        let died = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            Some(Ok(None)) | None => None,
        };
        if let Some(status) = died {
            let tail: Vec<String> = self.log_text().lines().rev().take(3).map(str::to_string).collect();
            say(&format!(
                "LazyFS died after clear-cache ({status}; {}): mounting it again over {}",
                tail.join(" / "),
                self.under.display()
            ));
            let work = self.mount.parent().expect("the mount is work/mnt").to_path_buf();
            let cuts = self.cuts;
            self.unmount();
            *self = LazyFs::mount(&self.binary.clone(), &work)
                .unwrap_or_else(|why| panic!("mounting LazyFS again after it died: {why}"));
            self.cuts = cuts;
        }
    }

    /// Unmounts (lazily if busy) and stops LazyFS. Idempotent; called on drop.
    pub fn unmount(&mut self) {
        if self.mounted {
            let plain = Command::new("fusermount3").arg("-u").arg(&self.mount).stderr(Stdio::null()).status();
            if !plain.is_ok_and(|s| s.success()) {
                let _ =
                    Command::new("fusermount3").arg("-uz").arg(&self.mount).stderr(Stdio::null()).status();
            }
            self.mounted = false;
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}
