//! Size-capped reads of kernel files (`/proc`): a path under a configured
//! root can be anything, and `/proc` files never need more than a few KiB.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The file's text, or an error when it is larger than `cap` bytes (one
/// byte past the cap is read to tell "exactly cap" from "more").
pub(crate) fn read_capped(path: &Path, cap: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::open(path)?.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than the limit of {cap} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_cap_and_refuses_more() {
        let dir = crate::testing::Scratch::new("read");
        let f = dir.join("f");
        std::fs::write(&f, "12345").unwrap();
        assert_eq!(read_capped(&f, 5).unwrap(), "12345");
        let err = read_capped(&f, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        // An endless file stops at the cap instead of filling memory.
        let err = read_capped(Path::new("/dev/zero"), 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }
}
