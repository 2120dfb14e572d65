//! Output files written atomically: a temporary file in the same directory,
//! synced, then renamed over the target, so a failed run never leaves a
//! half-written file.

use crate::diag::{Code, Diagnostic, Diags};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes a file through a temporary file and a rename. A path that
/// exists and is not a regular file (`/dev/stdout`, `/dev/null`, a FIFO) is
/// written in place: renaming over it would replace the device.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Diags> {
    let fail = |e: std::io::Error| {
        Diags::from(Diagnostic::error(
            Code::E105,
            format!("cannot write `{}`: {e}", path.display()),
        ))
    };
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(fail);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}
