//! A minimal ustar writer: an image's build context is a handful of regular files and
//! directories. Every header has mtime 0, so equal content gives equal bytes (and tags).

/// A tar archive being written.
#[derive(Debug, Default)]
pub struct Tar {
    out: Vec<u8>,
}

impl Tar {
    /// Entries belong to root: `COPY` in a Dockerfile ignores a tar's owners anyway.
    fn header(&mut self, path: &str, size: usize, mode: u32, kind: u8) {
        let mut h = [0u8; 512];
        let (prefix, name) = split(path);
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.out.extend_from_slice(&h);
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, content: &[u8], mode: u32) {
        self.header(path, content.len(), mode, b'0');
        self.out.extend_from_slice(content);
        let pad = (512 - content.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// Adds a directory (`path` ends with `/`).
    pub fn dir(&mut self, path: &str, mode: u32) {
        self.header(path, 0, mode, b'5');
    }

    /// The archive's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

/// Splits a path into ustar's 155-byte prefix and 100-byte name, at a `/`.
fn split(path: &str) -> (&str, &str) {
    if path.len() <= 100 {
        return ("", path);
    }
    let cut = path[..path.len().min(156)]
        .rfind('/')
        .filter(|&cut| path.len() - cut - 1 <= 100)
        .unwrap_or(0);
    (&path[..cut], &path[cut + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_checksum_owner_and_padding() {
        let mut tar = Tar::default();
        tar.dir("rootfs/tmp/", 0o1777);
        tar.file("rootfs/a", b"hello", 0o644);
        let bytes = tar.finish();
        // Two headers, one padded data block, two zero blocks.
        assert_eq!(bytes.len(), 512 * 5);
        assert_eq!(&bytes[..11], b"rootfs/tmp/");
        assert_eq!(&bytes[100..108], b"0001777\0");
        assert_eq!(bytes[156], b'5');
        let sum: u32 = bytes[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        let written = std::str::from_utf8(&bytes[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(written, 8).unwrap(), sum);
        assert_eq!(&bytes[1024..1029], b"hello");
        assert!(bytes[1029..].iter().all(|&b| b == 0));
    }

    #[test]
    fn long_paths_use_the_prefix_field() {
        let long = format!("rootfs/{}/libc.so.6", "d".repeat(120));
        let (prefix, name) = split(&long);
        assert_eq!(name, "libc.so.6");
        assert_eq!(format!("{prefix}/{name}"), long);
    }
}
