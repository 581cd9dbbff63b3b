//! The initramfs a guest boots into: an uncompressed `newc` cpio archive (the format
//! Documentation/driver-api/early-userspace/buffer-format.rst describes), which every kernel
//! with CONFIG_BLK_DEV_INITRD unpacks without any decompressor. Uncompressed because the
//! archive is built per boot and is a few MiB: compressing costs more than the kernel saves
//! reading it.
//!
//! Parent directories are added automatically; paths are absolute guest paths.

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File { data: Source, mode: u32 },
    Symlink(String),
}

#[derive(Debug, Clone)]
enum Source {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

/// An initramfs being assembled. Later additions of the same path replace earlier ones.
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    fn parents(&mut self, path: &str) {
        let mut p = String::new();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            p.push('/');
            p.push_str(part);
            self.nodes.entry(p.clone()).or_insert(Node::Dir);
        }
    }

    fn norm(path: &str) -> String {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        format!("/{}", parts.join("/"))
    }

    pub fn dir(&mut self, path: &str) {
        let path = Self::norm(path);
        self.parents(&path);
        self.nodes.insert(path, Node::Dir);
    }

    pub fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        let path = Self::norm(path);
        self.parents(&path);
        self.nodes.insert(
            path,
            Node::File {
                data: Source::Bytes(data),
                mode,
            },
        );
    }

    /// A host file, read when the archive is written (its permission bits are kept).
    pub fn file(&mut self, path: &str, host: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(host).map_err(|e| Error::new(format!("{}: {e}", host.display())))?;
        if !meta.is_file() {
            return Err(Error::new(format!(
                "{}: not a regular file, cannot go into the initramfs",
                host.display()
            )));
        }
        let path = Self::norm(path);
        self.parents(&path);
        self.nodes.insert(
            path,
            Node::File {
                data: Source::Path(host.to_path_buf()),
                mode: meta.permissions().mode() & 0o7777,
            },
        );
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = Self::norm(path);
        self.parents(&path);
        self.nodes.insert(path, Node::Symlink(target.to_string()));
    }

    /// Every regular file under `host` (recursively) at the same relative place under `at`,
    /// skipping directories named in `skip` (e.g. `target`, `.git`).
    pub fn tree(&mut self, at: &str, host: &Path, skip: &[&str]) -> Result<()> {
        let rd =
            std::fs::read_dir(host).map_err(|e| Error::new(format!("{}: {e}", host.display())))?;
        for e in rd {
            let e = e.map_err(|e| Error::new(format!("{}: {e}", host.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e
                .file_type()
                .map_err(|err| Error::new(format!("{}: {err}", e.path().display())))?;
            let guest = format!("{}/{}", at.trim_end_matches('/'), name);
            if ft.is_dir() {
                if !skip.contains(&name.as_str()) {
                    self.tree(&guest, &e.path(), skip)?;
                }
            } else if ft.is_file() {
                self.file(&guest, &e.path())?;
            }
        }
        Ok(())
    }

    /// Whether the archive holds `path` (a file, directory or symlink).
    pub fn has(&self, path: &str) -> bool {
        self.nodes.contains_key(&Self::norm(path))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Writes the archive.
    pub fn write(&self, out: &mut impl Write) -> Result<u64> {
        let mut w = Counter { inner: out, n: 0 };
        let io = |e: std::io::Error| Error::new(format!("writing the initramfs: {e}"));
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let (mode, data): (u32, std::borrow::Cow<[u8]>) = match node {
                Node::Dir => (0o040755, Vec::new().into()),
                Node::Symlink(t) => (0o120777, t.as_bytes().to_vec().into()),
                Node::File { data, mode } => {
                    let bytes = match data {
                        Source::Bytes(b) => b.as_slice().into(),
                        Source::Path(p) => std::fs::read(p)
                            .map_err(|e| Error::new(format!("{}: {e}", p.display())))?
                            .into(),
                    };
                    (0o100000 | mode, bytes)
                }
            };
            header(&mut w, ino as u32 + 1, mode, data.len() as u32, name).map_err(io)?;
            w.write_all(&data).map_err(io)?;
            pad(&mut w).map_err(io)?;
        }
        header(&mut w, 0, 0, 0, "TRAILER!!!").map_err(io)?;
        w.flush().map_err(io)?;
        Ok(w.n)
    }
}

struct Counter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn header<W: Write>(
    w: &mut Counter<W>,
    ino: u32,
    mode: u32,
    size: u32,
    name: &str,
) -> std::io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize (with the NUL), check.
    write!(
        w,
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    )?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)
}

fn pad<W: Write>(w: &mut Counter<W>) -> std::io::Result<()> {
    let rem = (4 - (w.n % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..rem])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let h = std::str::from_utf8(&buf[at..at + 110]).unwrap();
            assert_eq!(&h[..6], "070701");
            let field = |i: usize| u32::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&buf[at + 110..at + 110 + namesize - 1])
                .unwrap()
                .to_string();
            at = (at + 110 + namesize).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                assert_eq!(at, buf.len());
                return out;
            }
            out.push((name, mode, buf[at..at + size].to_vec()));
            at = (at + size).div_ceil(4) * 4;
        }
    }

    #[test]
    fn newc_round_trip() {
        let mut fs = Initramfs::new();
        fs.bytes("/init", b"#!x".to_vec(), 0o755);
        fs.bytes("/a/b/c.yaml", b"hello".to_vec(), 0o644);
        fs.symlink("/lib64", "lib");
        fs.dir("/./proc");
        let mut buf = Vec::new();
        let n = fs.write(&mut buf).unwrap();
        assert_eq!(n as usize, buf.len());
        let got = parse(&buf);
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/c.yaml", "init", "lib64", "proc"]);
        assert_eq!(got[2].1, 0o100644);
        assert_eq!(got[2].2, b"hello");
        assert_eq!(got[3].1, 0o100755);
        assert_eq!(got[4].1, 0o120777);
        assert_eq!(got[4].2, b"lib");
        assert_eq!(got[0].1, 0o040755);
    }

    #[test]
    fn missing_host_file_is_an_error() {
        let mut fs = Initramfs::new();
        let e = fs
            .file("/x", Path::new("/nonexistent/pvmtest-file"))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pvmtest-file"), "{e}");
    }
}
