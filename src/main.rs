use std::io::IsTerminal;

fn main() {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let mut io = mgen::cli::Io {
        out: &mut out,
        err: &mut err,
        color,
        progress: terminal,
    };
    let code = mgen::cli::main_with(std::env::args_os(), &mut io);
    std::process::exit(code);
}
