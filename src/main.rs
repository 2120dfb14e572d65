use std::io::IsTerminal;

fn main() {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let code = mgen::cli::main_with(
        std::env::args_os(),
        &mut mgen::cli::Io {
            out: &mut out,
            err: &mut err,
            color,
        },
    );
    std::process::exit(code);
}
