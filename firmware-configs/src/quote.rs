//! Quoting for the two languages the generated files speak: systemd's command lines
//! (`ExecStart=`) and POSIX `sh`; and the reverse of systemd's, so that a rendered unit can be
//! read back into the argument vector systemd will pass (the runtime checks that vector with its
//! own command-line parser, `edge-seg image`).

/// One argument for a systemd `ExecStart=` line: `%` (specifiers) and `$` (environment
/// expansion) are doubled; a word with blanks, quotes, backslashes or a `;` is double-quoted
/// with C escapes.
pub fn systemd_arg(arg: &str) -> String {
    let s = arg.replace('%', "%%").replace('$', "$$");
    let plain = !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c.is_control() || "\"'\\;".contains(c));
    if plain {
        return s;
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() => q.push_str(&format!("\\x{:02x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A systemd command line from its arguments.
pub fn systemd_command(args: &[String]) -> String {
    args.iter().map(|a| systemd_arg(a)).collect::<Vec<_>>().join(" ")
}

/// The arguments systemd passes for a command line (the value of `ExecStart=`), as systemd
/// reads it: leading `@-:+!` prefixes dropped, `%%` → `%`, words split at blanks with `"…"` and
/// `'…'` quoting and C escapes, `$$` → `$`. Anything this module never writes (another
/// specifier, a `$VAR` expansion, a lone `;` separator, an unknown escape) is an error.
pub fn systemd_unquote(line: &str) -> Result<Vec<String>, String> {
    let line = line.trim_start().trim_start_matches(['@', '-', ':', '+', '!']);
    // specifiers: only %% is expected
    let mut s = String::with_capacity(line.len());
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        if c == '%' {
            match it.next() {
                Some('%') => s.push('%'),
                Some(x) => return Err(format!("specifier %{x} (only %% is written)")),
                None => return Err("a lone % at the end".into()),
            }
        } else {
            s.push(c);
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i == chars.len() {
            break;
        }
        if chars[i] == ';' && chars.get(i + 1).is_none_or(|c| c.is_whitespace()) {
            return Err("a lone ; (command separator)".into());
        }
        let mut w = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    i += 1;
                    let (ch, used) = unescape(&chars[i..])?;
                    w.push(ch);
                    i += used;
                    continue;
                }
                (_, c) => w.push(c),
            }
            i += 1;
        }
        if quote.is_some() {
            return Err("an unterminated quote".into());
        }
        // environment expansion at exec time: only $$ is expected
        let mut out = String::with_capacity(w.len());
        let mut wi = w.chars();
        while let Some(c) = wi.next() {
            if c == '$' && wi.next() != Some('$') {
                return Err(format!("an environment expansion in {w:?} (only $$ is written)"));
            }
            out.push(c);
        }
        words.push(out);
    }
    if words.is_empty() {
        return Err("an empty command line".into());
    }
    Ok(words)
}

/// One C escape (after the backslash): the character and how many chars it took.
fn unescape(rest: &[char]) -> Result<(char, usize), String> {
    let c = *rest.first().ok_or("a backslash at the end")?;
    let simple = match c {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        's' => Some(' '),
        '\\' | '"' | '\'' | ';' => Some(c),
        _ => None,
    };
    if let Some(ch) = simple {
        return Ok((ch, 1));
    }
    if c == 'x' && rest.len() >= 3 {
        let hex: String = rest[1..3].iter().collect();
        if let Ok(v) = u8::from_str_radix(&hex, 16) {
            return Ok((v as char, 3));
        }
    }
    Err(format!("unknown escape \\{c}"))
}

/// One argument for POSIX `sh`: as is when it is made of safe characters, else single-quoted.
pub fn sh_arg(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=,+@%^-".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// A `sh` command line from its arguments.
pub fn sh_command(args: &[String]) -> String {
    args.iter().map(|a| sh_arg(a)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: &[&str] = &[
        "plain",
        "/dev/video0",
        "two words",
        "it's",
        "say \"hi\"",
        "back\\slash",
        "100%",
        "%n",
        "$HOME",
        "${X}",
        "$$",
        ";",
        ";x",
        "",
        "tab\there",
        "line\nbreak",
        "ünïcødé",
        "a=b,c",
        "video/x-raw(memory:NVMM),width=1280",
        "'",
        "\\",
        "\\;",
    ];

    #[test]
    fn systemd_quoting_round_trips() {
        let args: Vec<String> = AWKWARD.iter().map(|s| s.to_string()).collect();
        let line = systemd_command(&args);
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(systemd_unquote(&line).unwrap(), args, "{line}");
        for a in &args {
            assert_eq!(systemd_unquote(&format!("/bin/x {}", systemd_arg(a))).unwrap()[1], *a);
        }
    }

    #[test]
    fn plain_words_stay_unquoted() {
        assert_eq!(systemd_arg("--camera"), "--camera");
        assert_eq!(systemd_arg("0.0.0.0:8080"), "0.0.0.0:8080");
        assert_eq!(systemd_arg("two words"), "\"two words\"");
        assert_eq!(systemd_arg("50%"), "50%%");
    }

    #[test]
    fn systemd_unquote_reads_what_systemd_reads() {
        let w = systemd_unquote("-+/usr/sbin/nvpmodel -m 1").unwrap();
        assert_eq!(w, ["/usr/sbin/nvpmodel", "-m", "1"]);
        let w = systemd_unquote(r#"/bin/echo a"b c"d 'e f' \x41\s"#).unwrap();
        assert_eq!(w, ["/bin/echo", "ab cd", "e f", "A "]);
        assert!(systemd_unquote("/bin/echo $HOME").is_err());
        assert!(systemd_unquote("/bin/echo %n").is_err());
        assert!(systemd_unquote("/bin/echo a ; /bin/echo b").is_err());
        assert!(systemd_unquote("/bin/echo \"open").is_err());
        assert!(systemd_unquote("/bin/echo \\q").is_err());
    }

    #[test]
    fn sh_quoting_survives_a_real_shell() {
        let args: Vec<String> = AWKWARD.iter().map(|s| s.to_string()).collect();
        let script = format!("for a in {}; do printf '%s\\0' \"$a\"; done", sh_command(&args));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        let mut want = args.clone();
        want.push(String::new()); // after the last NUL
        assert_eq!(got, want);
    }
}
