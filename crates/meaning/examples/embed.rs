//! Prints the embedding of each line of standard input, one line of comma-separated numbers
//! each: `cargo run --release --example embed -- MODEL < lines.txt`.

use std::io::{BufRead, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: embed MODEL < lines")?;
    let model = feedmux_meaning::Model::load(std::path::Path::new(&path))?;
    eprintln!("kernel: {}", feedmux_meaning::Model::kernel());
    let started = std::time::Instant::now();
    let mut lines = 0;
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let v = model.embed(&line?, 512);
        let text: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
        writeln!(out, "{}", text.join(","))?;
        lines += 1;
    }
    eprintln!(
        "{lines} lines in {:.2?} ({:.1} ms a line)",
        started.elapsed(),
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(lines.max(1))
    );
    Ok(())
}
