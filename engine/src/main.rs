//! The `blockyard` binary: parses the command line and hands over to [`cli`].

mod cli;

/// mimalloc instead of the system allocator: a run allocates and frees many small JSON values,
/// and glibc's malloc took about a third of the executor's instructions (`BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    quiet_on_broken_pipe();
    cli::main()
}

/// `blockyard records list | head` closes the pipe early; Rust's print macros then panic, where
/// Unix tools die quietly of SIGPIPE. Without `unsafe` to restore SIGPIPE's default action, this
/// hook turns exactly that panic into the same quiet exit (status 141, as a shell reports it).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
