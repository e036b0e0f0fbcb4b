//! Logging: one line per event, whatever the events quote.

use crate::config::{Log, LogFormat};

/// Installs the global tracing subscriber (`ENROLLCA_LOG` overrides `log.level`).
pub(crate) fn init_logging(log: &Log) {
    let filter = std::env::var("ENROLLCA_LOG").unwrap_or_else(|_| log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(move || OneLine {
            inner: std::io::stderr(),
            ansi,
        });
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Writes each log event as exactly one line. Field values carry client input (SCEP
/// transaction ids, ACME URLs and identifiers, token names, refusal reasons quoting them): a
/// newline or carriage return there would forge a log line of its own, so control characters
/// are escaped, all but the event's final newline (and the formatter's own colour escapes on a
/// terminal). The formatter hands over one whole event per write.
struct OneLine<W> {
    inner: W,
    ansi: bool,
}

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.iter().any(|&b| needs_escape(b, self.ansi)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b if needs_escape(b, self.ansi) => {
                    line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                }
                b => line.push(b),
            }
        }
        if body.len() < buf.len() {
            line.push(b'\n');
        }
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Control characters other than tab (and ESC when colours are on, for the formatter's own).
fn needs_escape(b: u8, ansi: bool) -> bool {
    (b < 0x20 && b != b'\t' && !(ansi && b == 0x1b)) || b == 0x7f
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::OneLine;

    #[test]
    fn a_logged_value_cannot_start_a_line_of_its_own() {
        let mut out = OneLine {
            inner: Vec::new(),
            ansi: false,
        };
        let event = b"INFO transaction=tx\nERROR forged\r\x1b[31m done\n";
        assert_eq!(out.write(event).unwrap(), event.len());
        assert_eq!(
            String::from_utf8(out.inner).unwrap(),
            "INFO transaction=tx\\nERROR forged\\r\\x1b[31m done\n"
        );
        let mut out = OneLine {
            inner: Vec::new(),
            ansi: true,
        };
        out.write_all(b"\x1b[32mINFO\x1b[0m plain\n").unwrap();
        assert_eq!(out.inner, b"\x1b[32mINFO\x1b[0m plain\n");
    }
}
