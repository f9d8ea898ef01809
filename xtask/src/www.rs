//! The dApp page's web server for `cargo xtask demo`: static files on loopback.
//!
//! Goals: serve `www/` at `/`, the npm package (`wasm-client/pkg/`) at `/pkg/`, and the devnet's
//! `network.json` at `/network.json`, with the content types browsers insist on (`.wasm` as
//! `application/wasm`, modules as JavaScript). Non-goals: anything but GET/HEAD of those files;
//! it is a demo server, bound to 127.0.0.1 only. Request heads are capped at 8 KiB and paths with
//! `..` are refused, so nothing outside the three roots is reachable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// Where the files come from.
#[derive(Clone)]
pub struct Roots {
    /// `www/`.
    pub www: PathBuf,
    /// `wasm-client/pkg/`.
    pub pkg: PathBuf,
    /// The devnet's network.json.
    pub network: PathBuf,
}

/// Listens on 127.0.0.1:`port` (or any free port if taken) and serves in background threads.
pub fn serve(roots: Roots, port: u16) -> Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .context("cannot listen on 127.0.0.1 for the demo page")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let roots = roots.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &roots);
            });
        }
    });
    Ok(addr)
}

fn handle(mut stream: TcpStream, roots: &Roots) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new((&stream).take(8 * 1024));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the rest of the head.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
            true,
        );
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    match resolve(roots, path) {
        Some(file) => match std::fs::read(&file) {
            Ok(body) => respond(
                &mut stream,
                "200 OK",
                content_type(&file),
                &body,
                method == "GET",
            ),
            Err(_) => respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"not found\n",
                true,
            ),
        },
        None => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"not found\n",
            true,
        ),
    }
}

/// Maps a URL path to a file under one of the roots.
fn resolve(roots: &Roots, path: &str) -> Option<PathBuf> {
    // `..` would climb out; an empty segment (`//etc`) would make `join` start from `/`.
    if !path.starts_with('/')
        || path[1..].split('/').any(|s| s == ".." || s.contains('\\'))
        || path.contains("//")
    {
        return None;
    }
    match path {
        "/" | "/index.html" => Some(roots.www.join("index.html")),
        "/network.json" => Some(roots.network.clone()),
        p => {
            if let Some(rest) = p.strip_prefix("/pkg/") {
                (!rest.is_empty()).then(|| roots.pkg.join(rest))
            } else {
                let rest = p.trim_start_matches('/');
                (!rest.is_empty()).then(|| roots.www.join(rest))
            }
        }
    }
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("ts") | Some("md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// A minimal W3C WebDriver client (chromedriver on loopback), enough to drive the page.
pub struct Driver {
    port: u16,
    session: String,
    child: std::process::Child,
}

/// The key WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    /// Starts chromedriver and a headless Chromium session.
    pub fn start() -> Result<Self> {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let child = std::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start /usr/bin/chromedriver")?;
        let mut d = Self {
            port,
            session: String::new(),
            child,
        };
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage"]}}}});
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let created = loop {
            match d.call("POST", "/session", Some(&caps)) {
                Ok(v) => break v,
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        d.session = created["sessionId"]
            .as_str()
            .context("chromedriver gave no session id")?
            .to_string();
        Ok(d)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        // chromedriver keeps connections open: read the head, then exactly Content-Length bytes.
        let mut reader = BufReader::new(s.take(16 << 20));
        let mut head = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    len = v
                        .trim()
                        .parse()
                        .context("bad Content-Length from chromedriver")?;
                }
            }
            if head.is_empty() {
                head = line.trim_end().to_string();
            }
        }
        let mut json = vec![0u8; len];
        reader.read_exact(&mut json)?;
        let v: serde_json::Value = serde_json::from_slice(&json)
            .with_context(|| format!("chromedriver answered {head:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            anyhow::bail!("webdriver {method} {path}: {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.call(
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(serde_json::json!({ "url": url })))
            .map(drop)
    }

    fn element(&self, id: &str) -> Result<String> {
        let v = self.session_call(
            "POST",
            "/element",
            Some(serde_json::json!({"using": "css selector", "value": format!("#{id}")})),
        )?;
        Ok(v[ELEMENT]
            .as_str()
            .with_context(|| format!("no element #{id}"))?
            .to_string())
    }

    /// The visible text of `#id`.
    pub fn text(&self, id: &str) -> Result<String> {
        let e = self.element(id)?;
        let v = self.session_call("GET", &format!("/element/{e}/text"), None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Clicks `#id`.
    pub fn click(&self, id: &str) -> Result<()> {
        let e = self.element(id)?;
        self.session_call(
            "POST",
            &format!("/element/{e}/click"),
            Some(serde_json::json!({})),
        )
        .map(drop)
    }

    /// Types `text` into `#id` (for a file input: the file's path).
    pub fn type_into(&self, id: &str, text: &str) -> Result<()> {
        let e = self.element(id)?;
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            Some(serde_json::json!({ "text": text })),
        )
        .map(drop)
    }

    /// Saves a PNG screenshot of the page to `path` (for a person to look at).
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        use base64::Engine as _;
        let v = self.session_call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("chromedriver sent no screenshot")?)
            .context("chromedriver's screenshot is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Sets the browser window to `width` × `height` CSS pixels (a phone-width check).
    pub fn window_size(&self, width: u32, height: u32) -> Result<()> {
        self.session_call(
            "POST",
            "/window/rect",
            Some(serde_json::json!({ "width": width, "height": height })),
        )
        .map(drop)
    }

    /// Runs `script` in the page (a function body; `return` gives the value).
    pub fn execute(&self, script: &str) -> Result<serde_json::Value> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
    }

    /// Waits until `#id`'s text satisfies `done`; returns it.
    pub fn wait_text(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let t = self.text(id)?;
            if done(&t) {
                return Ok(t);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("#{id} still reads {t:?} after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_roots() {
        let roots = Roots {
            www: "/w".into(),
            pkg: "/p".into(),
            network: "/n/network.json".into(),
        };
        assert_eq!(resolve(&roots, "/"), Some("/w/index.html".into()));
        assert_eq!(resolve(&roots, "/app.js"), Some("/w/app.js".into()));
        assert_eq!(
            resolve(&roots, "/pkg/btfs_client_bg.wasm"),
            Some("/p/btfs_client_bg.wasm".into())
        );
        assert_eq!(
            resolve(&roots, "/network.json"),
            Some("/n/network.json".into())
        );
        assert_eq!(resolve(&roots, "/../etc/passwd"), None);
        assert_eq!(resolve(&roots, "/pkg/../../etc/passwd"), None);
        assert_eq!(resolve(&roots, "/pkg/"), None);
        assert_eq!(resolve(&roots, "/pkg//etc/passwd"), None);
        assert_eq!(resolve(&roots, "//etc/passwd"), None);
        assert_eq!(resolve(&roots, "etc/passwd"), None);
        assert_eq!(content_type(Path::new("x.wasm")), "application/wasm");
    }
}
