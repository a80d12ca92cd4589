//! `serve`: the browser bundle over HTTP on this machine, rebuilt first when stale.

use std::path::PathBuf;

use clap::Args;

use crate::web::{BuildWebArgs, build_web, bundle_dir, bundle_is_stale};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Serve this folder as it is instead of the (re)built bundle.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildWebArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            if bundle_is_stale(&args.build) {
                println!("the bundle is missing, built with other flags, or older than its inputs: building it");
                build_web(&args.build)?;
            }
            bundle_dir()
        }
    };
    crate::server::serve(dir, &args.host, args.port)
}
