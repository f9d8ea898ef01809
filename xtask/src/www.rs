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

/// The page's browser: headless Chromium driven over WebDriver by the `fantoccini` crate
/// (chromedriver on loopback), with the few blocking calls the page tests need.
pub struct Driver {
    rt: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    child: std::process::Child,
}

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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut d = Self {
            rt,
            client: None,
            child,
        };
        let caps = serde_json::json!({"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage"]}});
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let client = loop {
            let mut builder = fantoccini::ClientBuilder::new(
                hyper_util::client::legacy::connect::HttpConnector::new(),
            );
            builder.capabilities(caps.clone());
            match d.rt.block_on(builder.connect(&url)) {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > deadline => {
                    anyhow::bail!("cannot open a Chromium session through chromedriver: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        d.client = Some(client);
        Ok(d)
    }

    fn client(&self) -> Result<&fantoccini::Client> {
        self.client
            .as_ref()
            .context("the browser session is closed")
    }

    fn element(&self, id: &str) -> Result<fantoccini::elements::Element> {
        let c = self.client()?;
        self.rt
            .block_on(c.find(fantoccini::Locator::Id(id)))
            .with_context(|| format!("no element #{id}"))
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) -> Result<()> {
        let c = self.client()?;
        self.rt
            .block_on(c.goto(url))
            .with_context(|| format!("cannot open {url}"))
    }

    /// The visible text of `#id`.
    pub fn text(&self, id: &str) -> Result<String> {
        let e = self.element(id)?;
        self.rt
            .block_on(e.text())
            .with_context(|| format!("cannot read #{id}"))
    }

    /// Clicks `#id`.
    pub fn click(&self, id: &str) -> Result<()> {
        let e = self.element(id)?;
        self.rt
            .block_on(e.click())
            .with_context(|| format!("cannot click #{id}"))
    }

    /// Types `text` into `#id` (for a file input: the file's path).
    pub fn type_into(&self, id: &str, text: &str) -> Result<()> {
        let e = self.element(id)?;
        self.rt
            .block_on(e.send_keys(text))
            .with_context(|| format!("cannot type into #{id}"))
    }

    /// Saves a PNG screenshot of the page to `path` (for a person to look at).
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let c = self.client()?;
        let png = self
            .rt
            .block_on(c.screenshot())
            .context("chromedriver sent no screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Sets the browser window to `width` × `height` CSS pixels (a phone-width check).
    pub fn window_size(&self, width: u32, height: u32) -> Result<()> {
        let c = self.client()?;
        self.rt
            .block_on(c.set_window_size(width, height))
            .context("cannot resize the window")
    }

    /// Runs `script` in the page (a function body; `return` gives the value).
    pub fn execute(&self, script: &str) -> Result<serde_json::Value> {
        let c = self.client()?;
        self.rt
            .block_on(c.execute(script, Vec::new()))
            .with_context(|| format!("script failed: {script}"))
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
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
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
