//! `cargo xtask`: project automation. Commands come with the issues that
//! need them (`bench` next).

fn main() -> anyhow::Result<()> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    anyhow::bail!("unknown xtask command {cmd:?}; none is available yet")
}
