//! Opening the files a source names: regular files only, and pictures only up to a size.
//!
//! A table row or a shard name can point anywhere: at a FIFO (opening it for reading waits for
//! a writer forever), at `/dev/zero` (reading never ends), at a 1 GB sparse file. So the type
//! and size are checked from the metadata before opening, the file is opened non-blocking (a
//! FIFO swapped in after the check cannot stall the open), checked again on the open handle
//! (what is actually read), and read through a `take` so a file growing meanwhile stays
//! bounded too.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// Why a file was not read; `kind` is the skip counter it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub kind: &'static str,
    pub reason: String,
}

fn unreadable(path: &Path, reason: impl std::fmt::Display) -> Refusal {
    Refusal {
        kind: "unreadable",
        reason: format!("cannot read {}: {reason}", path.display()),
    }
}

fn file_type_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn check(path: &Path, meta: &Metadata, max_bytes: u64) -> Result<u64, Refusal> {
    if !meta.is_file() {
        let what = file_type_name(meta);
        return Err(unreadable(
            path,
            format!("it is {what}; only regular files are read"),
        ));
    }
    let len = meta.len();
    if len > max_bytes {
        return Err(Refusal {
            kind: "too_large",
            reason: format!(
                "{} is {len} bytes, above the limit of {max_bytes} (raise `max_image_bytes` \
                 to accept it)",
                path.display()
            ),
        });
    }
    Ok(len)
}

/// Opens `path` for reading if it is a regular file (links followed) of at most `max_bytes`.
/// Returns the file and its length.
pub fn open_regular(path: &Path, max_bytes: u64) -> Result<(File, u64), Refusal> {
    let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
    check(path, &meta, max_bytes)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A FIFO put in place after the check above: open returns at once instead of
        // waiting for a writer, and the check below refuses it. Reads of a regular file
        // ignore the flag.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| unreadable(path, e))?;
    let meta = file.metadata().map_err(|e| unreadable(path, e))?;
    let len = check(path, &meta, max_bytes)?;
    Ok((file, len))
}

/// The bytes of the regular file `path`, refused without reading when over `max_bytes`.
pub fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Refusal> {
    let (file, len) = open_regular(path, max_bytes)?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|e| unreadable(path, e))?;
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Refusal {
            kind: "too_large",
            reason: format!(
                "{} grew past the limit of {max_bytes} bytes while being read",
                path.display()
            ),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lightclip-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_are_read_up_to_the_limit() {
        let dir = temp_dir("limit");
        let path = dir.join("a.bin");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_limited(&path, 100).unwrap(), vec![7u8; 100]);
        let refused = read_limited(&path, 99).unwrap_err();
        assert_eq!(refused.kind, "too_large");
        assert!(
            refused.reason.contains("100 bytes, above the limit of 99"),
            "{refused:?}"
        );
        // A sparse file's size is refused from its metadata, never read.
        let sparse = dir.join("sparse.bin");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        assert_eq!(
            read_limited(&sparse, 64 << 20).unwrap_err().kind,
            "too_large"
        );
        let missing = read_limited(&dir.join("nope"), 10).unwrap_err();
        assert_eq!(missing.kind, "unreadable");
        assert_eq!(read_limited(&dir, 10).unwrap_err().kind, "unreadable");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        let zero = read_limited(Path::new("/dev/zero"), u64::MAX).unwrap_err();
        assert_eq!(zero.kind, "unreadable");
        assert!(zero.reason.contains("a device"), "{zero:?}");

        let dir = temp_dir("fifo");
        let fifo = dir.join("pipe.jpg");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo is not available");
            return;
        }
        // No writer ever comes: this would hang forever if the FIFO were opened.
        let refused = read_limited(&fifo, u64::MAX).unwrap_err();
        assert!(refused.reason.contains("a FIFO"), "{refused:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
