//! Helpers shared by the tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::data::Mnist;

/// The real MNIST folder if this machine has one (`$MNIST_DATA_DIR`, or `../shared/data/mnist`
/// beside the checkout), so tests that need the data run in CI and skip loudly elsewhere.
pub fn mnist_dir() -> Option<PathBuf> {
    let from_env = std::env::var_os(crate::data::DATA_DIR_ENV).map(PathBuf::from);
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist");
    let found = from_env.into_iter().chain([beside]).find(|dir| dir.is_dir());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must provide MNIST (set MNIST_DATA_DIR)");
        eprintln!("MNIST not found: set MNIST_DATA_DIR to run the tests that need it");
    }
    found
}

/// MNIST, loaded once per test binary.
pub fn mnist() -> Option<&'static Mnist> {
    static MNIST: OnceLock<Option<Mnist>> = OnceLock::new();
    MNIST.get_or_init(|| mnist_dir().map(|dir| Mnist::load_from(&dir).expect("MNIST loads"))).as_ref()
}
