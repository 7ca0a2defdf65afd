//! The per-call thread: the one way this crate moves work into a namespace.

use std::path::Path;

use crate::NsError;

/// Runs `f` on a fresh, named OS thread and waits for it. The thread exits
/// with `f`, so whatever namespace `f` entered dies with it. `path` names the
/// namespace in errors; a panic in `f` becomes [`NsError::Panicked`].
pub(crate) fn on_fresh_thread<T: Send + 'static>(
    name: &str,
    path: &Path,
    f: impl FnOnce() -> Result<T, NsError> + Send + 'static,
) -> Result<T, NsError> {
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|source| NsError::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
    match handle.join() {
        Ok(result) => result,
        Err(payload) => Err(NsError::Panicked {
            path: path.to_path_buf(),
            message: panic_message(payload.as_ref()),
        }),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
