//! `otg-loadtest`: see `otg-loadtest --help` and the README.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let options = otg_loadtest::Options::parse();
    let out = options.out.clone();
    let report =
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(otg_loadtest::run(options))?;
    println!("{}", report.markdown());
    println!("report: {}/report.json, report.md, report.svg", out.display());
    anyhow::ensure!(report.verification.ok, "verification failed: records were lost or stored twice");
    Ok(())
}
