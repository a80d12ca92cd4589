//! MNIST on disk: finding, downloading, verifying and parsing the four IDX files.
//!
//! Lookup order: an explicit folder, then `$MNIST_DATA_DIR`, then the user cache, which is
//! filled from a public mirror when empty. Every file is checked against the SHA-256 of its
//! decompressed bytes before use, and a download only lands in the cache once it verifies.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use infer::{IMAGE_SIZE, PIXELS};

/// Environment variable naming a folder that holds the IDX files.
pub const DATA_DIR_ENV: &str = "MNIST_DATA_DIR";

/// Mirrors tried in order when no local copy exists. Both serve the original `.gz` files.
const MIRRORS: &[&str] =
    &["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"];

/// How long a mirror may keep a download waiting (to connect, or for its next bytes) before
/// it counts as failed and the next is tried: without a limit, one that stalls hangs the run.
const STALL: Duration = Duration::from_secs(30);

/// One of the four files that make up MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxFile {
    /// File name without the `.gz` suffix.
    pub name: &'static str,
    /// SHA-256 of the decompressed bytes, as published with the dataset.
    pub sha256: &'static str,
    /// Number of items the file must hold.
    pub count: usize,
}

impl IdxFile {
    fn is_images(self) -> bool {
        self.name.contains("images")
    }

    /// Bytes before the first item: the magic number and one 4-byte size per dimension.
    fn header_len(self) -> usize {
        if self.is_images() { 16 } else { 8 }
    }

    /// Bytes of the whole file, decompressed.
    pub fn decompressed_len(self) -> usize {
        self.header_len() + self.count * if self.is_images() { PIXELS } else { 1 }
    }
}

pub const TRAIN_IMAGES: IdxFile = IdxFile {
    name: "train-images-idx3-ubyte",
    sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    count: 60_000,
};
pub const TRAIN_LABELS: IdxFile = IdxFile {
    name: "train-labels-idx1-ubyte",
    sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    count: 60_000,
};
pub const TEST_IMAGES: IdxFile = IdxFile {
    name: "t10k-images-idx3-ubyte",
    sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    count: 10_000,
};
pub const TEST_LABELS: IdxFile = IdxFile {
    name: "t10k-labels-idx1-ubyte",
    sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    count: 10_000,
};

/// Everything that can be wrong with the data, each naming the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: not found (looked for it and its .gz)", .0.display())]
    Missing(PathBuf),
    #[error("{path}: cannot read: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: truncated: {why}", path = .path.display())]
    Truncated { path: PathBuf, why: String },
    #[error("{path}: wrong magic number {found:#010x}, expected {expected:#010x}", path = .path.display())]
    Magic { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: wrong shape: {why}", path = .path.display())]
    Shape { path: PathBuf, why: String },
    #[error("{path}: SHA-256 of the decompressed bytes is {found}, expected {expected}", path = .path.display())]
    Hash { path: PathBuf, found: String, expected: &'static str },
    #[error(
        "{name}: download failed from every mirror ({why}); set {DATA_DIR_ENV} or pass --data-dir to use a local copy"
    )]
    Download { name: &'static str, why: String },
    #[error("no cache folder on this system; set {DATA_DIR_ENV} or pass --data-dir")]
    NoCache,
}

/// Images and labels of one split, images as 28x28 grey bytes, row-major.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * PIXELS..(index + 1) * PIXELS]
    }

    /// The items `range`, copied into a split of their own.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Split {
        Split {
            images: self.images[range.start * PIXELS..range.end * PIXELS].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }
}

/// The whole dataset, verified.
#[derive(Debug, Clone)]
pub struct Mnist {
    pub train: Split,
    pub test: Split,
    /// Where the files were read from.
    pub source: PathBuf,
}

impl Mnist {
    /// Finds, verifies and parses MNIST (see the module docs for the lookup order).
    pub fn load(data_dir: Option<&Path>) -> Result<Mnist, DataError> {
        Self::load_from(&Self::folder(data_dir)?)
    }

    /// The 10,000 test images alone, for scoring a model: the training files are neither read
    /// nor downloaded.
    pub fn load_test(data_dir: Option<&Path>) -> Result<Split, DataError> {
        read_split(&folder(data_dir, &[TEST_IMAGES, TEST_LABELS])?, TEST_IMAGES, TEST_LABELS)
    }

    /// The folder [`Mnist::load`] reads, found the same way (downloading what is missing into
    /// the user cache), without reading it.
    pub fn folder(data_dir: Option<&Path>) -> Result<PathBuf, DataError> {
        folder(data_dir, &[TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS])
    }

    /// Reads the four files from `dir`, failing on the first missing or bad one.
    pub fn load_from(dir: &Path) -> Result<Mnist, DataError> {
        Ok(Mnist {
            train: read_split(dir, TRAIN_IMAGES, TRAIN_LABELS)?,
            test: read_split(dir, TEST_IMAGES, TEST_LABELS)?,
            source: dir.to_path_buf(),
        })
    }
}

/// The folder to read `files` from: `data_dir`, else `$MNIST_DATA_DIR`, else the user cache
/// with `files` downloaded into it where missing.
fn folder(data_dir: Option<&Path>, files: &[IdxFile]) -> Result<PathBuf, DataError> {
    Ok(match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => match std::env::var_os(DATA_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => cached_or_downloaded(files)?,
        },
    })
}

fn read_split(dir: &Path, images: IdxFile, labels: IdxFile) -> Result<Split, DataError> {
    Ok(Split { images: read_verified(dir, images)?, labels: read_verified(dir, labels)? })
}

/// The plain or `.gz` file for `file` in `dir`, whichever exists.
fn locate(dir: &Path, file: IdxFile) -> Result<PathBuf, DataError> {
    let plain = dir.join(file.name);
    let gz = dir.join(format!("{}.gz", file.name));
    [plain.clone(), gz].into_iter().find(|path| path.is_file()).ok_or(DataError::Missing(plain))
}

/// Reads one file, decompressing if gzipped, checks structure and hash, returns the payload.
fn read_verified(dir: &Path, file: IdxFile) -> Result<Vec<u8>, DataError> {
    let path = locate(dir, file)?;
    let raw = fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let mut bytes = decode_idx(&path, raw, file)?;
    verify_hash(&path, &bytes, file)?;
    Ok(bytes.split_off(file.header_len()))
}

/// The bytes of an IDX file as read from disk or the network, plain or gzipped: decompressed
/// and checked to be the file `file` names (header and length; not yet its hash).
pub fn decode_idx(path: &Path, raw: Vec<u8>, file: IdxFile) -> Result<Vec<u8>, DataError> {
    let bytes = decompress(path, raw, file.decompressed_len())?;
    parse_idx(path, &bytes, file)?;
    Ok(bytes)
}

/// Gunzips `raw` (plain bytes pass through), stopping past `limit` bytes so that a small
/// gzip bomb cannot take the machine's memory.
fn decompress(path: &Path, raw: Vec<u8>, limit: usize) -> Result<Vec<u8>, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(raw.as_slice()).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            DataError::Truncated { path: path.to_path_buf(), why: "gzip stream ends early".into() }
        }
        _ => DataError::Io { path: path.to_path_buf(), source: e },
    })?;
    if out.len() > limit {
        return Err(DataError::Shape { path: path.to_path_buf(), why: format!("decompresses to over {limit} bytes") });
    }
    Ok(out)
}

/// Checks the IDX header of decompressed `bytes` against what `file` must be, and returns the
/// payload: one byte per pixel for images, one byte per label for labels.
pub fn parse_idx<'a>(path: &Path, bytes: &'a [u8], file: IdxFile) -> Result<&'a [u8], DataError> {
    let is_images = file.is_images();
    let dims = if is_images { 3 } else { 1 };
    let header_len = file.header_len();
    let truncated = |why: String| DataError::Truncated { path: path.to_path_buf(), why };
    if bytes.len() < header_len {
        return Err(truncated(format!("{} bytes, shorter than the {header_len}-byte header", bytes.len())));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    // 0x08: unsigned bytes; the low byte is the number of dimensions.
    let expected = 0x0000_0800 | dims as u32;
    if word(0) != expected {
        return Err(DataError::Magic { path: path.to_path_buf(), found: word(0), expected });
    }
    let count = word(1) as usize;
    if count != file.count {
        return Err(DataError::Shape {
            path: path.to_path_buf(),
            why: format!("{count} items, expected {}", file.count),
        });
    }
    let item_len = if is_images {
        let (rows, cols) = (word(2) as usize, word(3) as usize);
        if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE) {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                why: format!("images are {rows}x{cols}, expected {IMAGE_SIZE}x{IMAGE_SIZE}"),
            });
        }
        PIXELS
    } else {
        1
    };
    let payload = &bytes[header_len..];
    let want = count * item_len;
    if payload.len() < want {
        return Err(truncated(format!("{} payload bytes, expected {want}", payload.len())));
    }
    if payload.len() > want {
        return Err(DataError::Shape {
            path: path.to_path_buf(),
            why: format!("{} trailing bytes after the last item", payload.len() - want),
        });
    }
    if !is_images && let Some(bad) = payload.iter().find(|&&label| label > 9) {
        return Err(DataError::Shape { path: path.to_path_buf(), why: format!("label {bad} is not a digit") });
    }
    Ok(payload)
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn verify_hash(path: &Path, bytes: &[u8], file: IdxFile) -> Result<(), DataError> {
    let found = sha256_hex(bytes);
    if found != file.sha256 {
        return Err(DataError::Hash { path: path.to_path_buf(), found, expected: file.sha256 });
    }
    Ok(())
}

/// The per-user cache folder, with `files` present and verified, downloading what is not.
fn cached_or_downloaded(files: &[IdxFile]) -> Result<PathBuf, DataError> {
    let dir = dirs::cache_dir().ok_or(DataError::NoCache)?.join("mnist-pipeline").join("mnist");
    for &file in files {
        if locate(&dir, file).is_err() {
            download(&dir, file, MIRRORS, STALL)?;
        }
    }
    Ok(dir)
}

/// Fetches `file` into `dir` from the first of `mirrors` (URLs ending in `/`) whose copy
/// arrives without stalling for `stall` and verifies, through a temporary file that is renamed
/// only then, so an interrupted or corrupt download never leaves a file that looks complete.
fn download(dir: &Path, file: IdxFile, mirrors: &[impl AsRef<str>], stall: Duration) -> Result<(), DataError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let target = dir.join(format!("{}.gz", file.name));
    let temp = dir.join(format!(".{}.gz.part", file.name));
    let mut failures = Vec::new();
    for mirror in mirrors {
        let url = format!("{}{}.gz", mirror.as_ref(), file.name);
        eprintln!("downloading {url}");
        let body = match fetch(&url, stall) {
            Ok(body) => body,
            Err(why) => {
                failures.push(format!("{url}: {why}"));
                continue;
            }
        };
        // Checked in memory, so the error names the URL: nothing is on disk yet.
        let source = Path::new(&url);
        let checked = decode_idx(source, body.clone(), file).and_then(|bytes| verify_hash(source, &bytes, file));
        if let Err(e) = checked {
            failures.push(e.to_string());
            continue;
        }
        fs::write(&temp, &body).map_err(io_err(&temp))?;
        fs::rename(&temp, &target).map_err(io_err(&target))?;
        return Ok(());
    }
    Err(DataError::Download { name: file.name, why: failures.join("; ") })
}

fn fetch(url: &str, stall: Duration) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_connect(Some(stall)).timeout_per_read(Some(stall)).build().into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    response.body_mut().with_config().limit(64 << 20).read_to_vec().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    use super::*;

    fn labels_file(count: u32, labels: &[u8]) -> Vec<u8> {
        let mut bytes = 0x0000_0801u32.to_be_bytes().to_vec();
        bytes.extend(count.to_be_bytes());
        bytes.extend(labels);
        bytes
    }

    const TINY: IdxFile = IdxFile { name: "tiny-labels-idx1-ubyte", sha256: "", count: 3 };

    #[test]
    fn parses_a_well_formed_labels_file() {
        let bytes = labels_file(3, &[7, 2, 1]);
        assert_eq!(parse_idx(Path::new("x"), &bytes, TINY).unwrap(), &[7, 2, 1]);
    }

    #[test]
    fn rejects_broken_headers_and_payloads() {
        let path = Path::new("labels");
        let err = |bytes: &[u8]| parse_idx(path, bytes, TINY).unwrap_err();
        assert!(matches!(err(&[0, 0, 8]), DataError::Truncated { .. }));
        assert!(matches!(err(&labels_file(3, &[1, 2])), DataError::Truncated { .. }));
        assert!(matches!(err(&labels_file(4, &[1, 2, 3, 4])), DataError::Shape { .. }));
        assert!(matches!(err(&labels_file(3, &[1, 2, 3, 4])), DataError::Shape { .. }));
        assert!(matches!(err(&labels_file(3, &[1, 2, 30])), DataError::Shape { .. }));
        let mut images_magic = labels_file(3, &[1, 2, 3]);
        images_magic[3] = 0x03;
        let message = err(&images_magic).to_string();
        assert!(message.contains("labels") && message.contains("magic"), "{message}");
    }

    #[test]
    fn rejects_images_of_the_wrong_size() {
        let mut bytes = 0x0000_0803u32.to_be_bytes().to_vec();
        for word in [10_000u32, 32, 32] {
            bytes.extend(word.to_be_bytes());
        }
        let err = parse_idx(Path::new("img"), &bytes, TEST_IMAGES).unwrap_err();
        assert!(err.to_string().contains("32x32"), "{err}");
    }

    #[test]
    fn a_gzip_that_inflates_past_the_file_is_refused_without_inflating_it() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &labels_file(3, &[0; 64 << 20])).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 128 << 10, "{} bytes", bomb.len());
        let err = decode_idx(Path::new("bomb.gz"), bomb, TINY).unwrap_err();
        assert!(err.to_string().contains("decompresses to over 11 bytes"), "{err}");
    }

    /// How the test server answers a path.
    enum Answer {
        File(Vec<u8>),
        /// Holds the connection open and says nothing, as a stalled mirror does.
        Silence,
    }

    /// Answers each GET on loopback as `routes` says for its path (404 for any other), each
    /// connection on a thread of its own, until the test ends; returns the base URL.
    fn serve(routes: Vec<(String, Answer)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let routes = Arc::clone(&routes);
                std::thread::spawn(move || {
                    let mut request = BufReader::new(&stream);
                    let mut line = String::new();
                    let _ = request.read_line(&mut line);
                    let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    while request.read_line(&mut line).is_ok_and(|read| read > 2) {
                        line.clear();
                    }
                    let (status, body) = match routes.iter().find(|(route, _)| *route == path) {
                        Some((_, Answer::File(body))) => ("200 OK", &body[..]),
                        Some((_, Answer::Silence)) => return std::thread::sleep(Duration::from_secs(60)),
                        None => ("404 Not Found", &[][..]),
                    };
                    let head =
                        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
                });
            }
        });
        base
    }

    /// Mirrors that miss the file, serve it tampered, serve half of it or stall are each named
    /// in the error, and leave nothing behind; the first mirror whose file verifies lands it.
    #[test]
    fn a_download_lands_only_once_it_verifies() {
        let real = fs::read(locate(&crate::testing::mnist_dir(), TEST_LABELS).unwrap()).unwrap();
        let mut tampered = decode_idx(Path::new("labels"), real.clone(), TEST_LABELS).unwrap();
        tampered[100] = (tampered[100] + 1) % 10;
        let file = format!("{}.gz", TEST_LABELS.name);
        let base = serve(vec![
            (format!("/tampered/{file}"), Answer::File(tampered)),
            (format!("/truncated/{file}"), Answer::File(real[..real.len() / 2].to_vec())),
            (format!("/stalled/{file}"), Answer::Silence),
            (format!("/good/{file}"), Answer::File(real.clone())),
        ]);
        let mirror = |name: &str| format!("{base}/{name}/");
        let failing = [mirror("missing"), mirror("tampered"), mirror("truncated"), mirror("stalled")];
        let stall = Duration::from_secs(1);
        let dir = tempfile::tempdir().unwrap();
        let files_in_dir = || fs::read_dir(dir.path()).unwrap().count();

        let err = download(dir.path(), TEST_LABELS, &failing, stall).unwrap_err().to_string();
        let reasons = ["http status: 404", "SHA-256", "truncated: gzip stream ends early", "timeout: per read"];
        for (mirror, why) in failing.iter().zip(reasons) {
            assert!(err.contains(&format!("{mirror}{file}: {why}")), "{mirror}: {why} missing from: {err}");
        }
        assert_eq!(files_in_dir(), 0, "a failed download must leave nothing behind");

        download(dir.path(), TEST_LABELS, &[&failing[..], &[mirror("good")]].concat(), stall).unwrap();
        assert_eq!(fs::read(dir.path().join(&file)).unwrap(), real);
        assert_eq!(files_in_dir(), 1, "no temporary file may be left");
        read_verified(dir.path(), TEST_LABELS).expect("the downloaded file reads");
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    /// A copy of the real files, one of them altered, must be refused by name.
    #[test]
    fn refuses_missing_truncated_and_tampered_files() {
        let real = crate::testing::mnist_dir();
        let dir = tempfile::tempdir().unwrap();
        for file in [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS] {
            let src = locate(&real, file).unwrap();
            fs::copy(&src, dir.path().join(src.file_name().unwrap())).unwrap();
        }
        Mnist::load_from(dir.path()).expect("an exact copy loads");

        let labels = locate(dir.path(), TEST_LABELS).unwrap();
        let mut bytes = decompress(&labels, fs::read(&labels).unwrap(), TEST_LABELS.decompressed_len()).unwrap();
        fs::remove_file(&labels).unwrap();
        let plain = dir.path().join(TEST_LABELS.name);

        let missing = Mnist::load_from(dir.path()).unwrap_err();
        assert!(matches!(missing, DataError::Missing(_)), "{missing}");

        bytes[100] = (bytes[100] + 1) % 10;
        fs::write(&plain, &bytes).unwrap();
        let tampered = Mnist::load_from(dir.path()).unwrap_err();
        assert!(matches!(tampered, DataError::Hash { .. }), "{tampered}");
        assert!(tampered.to_string().contains(TEST_LABELS.name));

        fs::write(&plain, &bytes[..5000]).unwrap();
        let truncated = Mnist::load_from(dir.path()).unwrap_err();
        assert!(matches!(truncated, DataError::Truncated { .. }), "{truncated}");
    }
}
