//! Helpers shared by the tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::data::Mnist;

/// The folder the real MNIST was read from (see [`mnist`]).
pub fn mnist_dir() -> PathBuf {
    mnist().source.clone()
}

/// MNIST, loaded once per test binary and found as `train` finds it: `$MNIST_DATA_DIR`, else
/// the user cache, downloading and verifying what is missing. A test that needs it fails,
/// saying what to set, when neither gives it: it never passes without the data.
pub fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Result<Mnist, String>> = OnceLock::new();
    let loaded = MNIST.get_or_init(|| Mnist::load(None).map_err(|e| e.to_string()));
    loaded.as_ref().unwrap_or_else(|e| panic!("this test needs MNIST: {e}"))
}
