use std::process::ExitCode;

use clap::Parser;
use ovltrace::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => ovltrace::commands::run::main(args),
        Command::Top(args) => ovltrace::commands::top::main(args),
        Command::Doctor(args) => ovltrace::commands::doctor::main(args),
        Command::Layers(args) => ovltrace::commands::layers::main(args),
        Command::Report(args) => ovltrace::commands::report::main(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line per cause, no backtrace: this is what users see.
            eprintln!("ovltrace: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
