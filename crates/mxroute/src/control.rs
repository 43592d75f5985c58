//! Requests to a running process through files in its control directory (`mxroute queue`
//! to a relay, `mxroute lab switch` to `lab up`): no socket, and a reader that lists the
//! directory never sees half a request.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Fatal, exit};

/// A name part unique to this call: the pid and the clock's nanoseconds.
pub fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}{nanos}", std::process::id())
}

/// Write `content` as `dir/name`: first under a `tmp-` name readers skip, then renamed, so
/// the request appears whole or not at all.
pub fn drop_request(dir: &Path, name: &str, content: &[u8]) -> Result<PathBuf, Fatal> {
    let tmp = dir.join(format!("tmp-{name}"));
    let request = dir.join(name);
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, &request))
        .map_err(|e| Fatal::new(exit::OS_ERR, format!("{}: {e}", request.display())))?;
    Ok(request)
}
