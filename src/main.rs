use std::io::IsTerminal;

fn main() {
    mgen::alloc::tune();
    let terminal = std::io::stderr().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    // No lock of stdout or stderr is held for the run: progress is drawn
    // from rayon workers and the bar's own ticker, which take stderr's lock
    // for each line; holding it here deadlocked every simulated command on a
    // terminal. `Stdout` is line-buffered and `Stderr` unbuffered, and each
    // locks per write.
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut io = mgen::cli::Io {
        out: &mut out,
        err: &mut err,
        color,
        progress: if terminal {
            mgen::progress::Mode::Bar
        } else {
            mgen::progress::Mode::Log
        },
    };
    let code = mgen::cli::main_with(std::env::args_os(), &mut io);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}
