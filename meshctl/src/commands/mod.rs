//! One module per command; each returns the process exit code.

use crate::cli::{Cli, Command, LocalCommand};
use crate::local::StateDir;

pub mod analyze;
pub mod apply;
pub mod authz;
pub mod check;
pub mod dashboard;
pub mod demo;
pub mod exec;
pub mod explain;
pub mod get;
pub mod inject;
pub mod local;
pub mod proxy_config;
pub mod proxy_status;
pub mod tap;
pub mod validate;
pub mod viz;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Local(l) => {
            let state = StateDir::resolve(l.state.state_dir);
            match l.command {
                LocalCommand::Up(a) => local::up(&state, &a).await,
                LocalCommand::Down => local::down(&state).await,
                LocalCommand::Daemon(a) => local::daemon(&state, &a).await,
                LocalCommand::Controller(a) => local::controller(&state, &a.action).await,
                LocalCommand::Apply(f) => apply::apply(&state, &f.files).await,
                LocalCommand::Delete(f) => apply::delete(&state, &f.files).await,
                LocalCommand::Get(g) => get::get(&state, &g).await,
                LocalCommand::Exec(e) => exec::exec(&state, &e).await,
                LocalCommand::Logs(l) => exec::logs(&state, &l).await,
            }
        }
        Command::Demo(d) => demo::demo(&StateDir::resolve(d.state.state_dir), d.requests).await,
        Command::Validate(v) => validate::validate(&v),
        Command::Inject(i) if i.workload.is_some() => inject::live(&i).await,
        Command::Inject(i) => inject::run(&i),
        Command::Analyze(a) => analyze::analyze(&a).await,
        Command::ProxyStatus(p) => proxy_status::proxy_status(&p).await,
        Command::ProxyConfig(p) => proxy_config::proxy_config(&p).await,
        Command::Authz(a) => match a.command {
            crate::cli::AuthzCommand::Check(c) => authz::check(&c).await,
        },
        Command::Explain(x) => explain::explain(&x).await,
        Command::Stat(a) => viz::stat(&a).await,
        Command::Edges(a) => viz::edges(&a).await,
        Command::Tap(a) => tap::tap(&a).await,
        Command::Top(a) => tap::top(&a).await,
        Command::Dashboard(a) => dashboard::dashboard(a).await,
        Command::Check(c) => check::check(&c).await,
        Command::Install(i) => crate::install::install(&i, false).await,
        Command::Upgrade(i) => crate::install::install(&i, true).await,
        Command::Uninstall(u) => crate::install::uninstall(&u).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
