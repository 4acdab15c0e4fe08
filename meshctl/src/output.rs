//! Human tables on stdout.

/// Prints rows as aligned columns under `header`.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl shows ages.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Prints `data` as JSON or YAML; false for the table format.
pub fn print_data<T: serde::Serialize>(
    output: crate::cli::Output,
    data: &T,
) -> anyhow::Result<bool> {
    use crate::cli::Output;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(data)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(data)?),
        Output::Table => return Ok(false),
    }
    Ok(true)
}
