//! An upstream feed server for tests: serves whatever a test puts at a path, on 127.0.0.1 at
//! a free port, and records the headers of every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;

#[derive(Clone, Debug)]
pub struct Page {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stream: Stream,
    /// Time taken before answering.
    pub delay: Duration,
}

/// How the body goes out.
#[derive(Clone, Debug, Default)]
pub enum Stream {
    /// All at once.
    #[default]
    Whole,
    /// `body`, then one byte every `interval`, forever.
    Drip(Duration),
    /// `body`, then 64 KiB chunks of filler, forever.
    Endless,
}

impl Page {
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Page {
        Page {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            stream: Stream::Whole,
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct Inner {
    pages: HashMap<String, Page>,
    requests: Vec<(String, HeaderMap)>,
    /// When each request arrived, and how many were being answered at the busiest moment.
    arrivals: Vec<std::time::Instant>,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(serve).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Upstream { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Serves `body` at `path` with status 200 and the given headers.
    pub fn put(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) {
        self.put_page(path, Page::new(200, headers, body));
    }

    pub fn put_page(&self, path: &str, page: Page) {
        self.inner
            .lock()
            .unwrap()
            .pages
            .insert(path.to_owned(), page);
    }

    /// When each request arrived, oldest first, and the most answered at once.
    pub fn load(&self) -> (Vec<std::time::Instant>, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.arrivals.clone(), inner.max_in_flight)
    }

    /// When each request for `path` arrived, oldest first.
    pub fn arrivals_of(&self, path: &str) -> Vec<std::time::Instant> {
        let inner = self.inner.lock().unwrap();
        inner
            .requests
            .iter()
            .zip(&inner.arrivals)
            .filter(|((p, _), _)| p == path)
            .map(|(_, at)| *at)
            .collect()
    }

    /// The headers of every request made for `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<HeaderMap> {
        self.inner
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .collect()
    }
}

async fn serve(State(shared): State<Arc<Mutex<Inner>>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let page = {
        let mut inner = shared.lock().unwrap();
        inner.requests.push((path.clone(), headers.clone()));
        inner.arrivals.push(std::time::Instant::now());
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        inner.pages.get(&path).cloned()
    };
    if let Some(delay) = page.as_ref().map(|p| p.delay).filter(|d| !d.is_zero()) {
        tokio::time::sleep(delay).await;
    }
    shared.lock().unwrap().in_flight -= 1;
    let Some(page) = page else {
        return (StatusCode::NOT_FOUND, "not here").into_response();
    };
    // Conditional GET, as a well-behaved server answers it.
    let etag = page
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    if let (Some(etag), Some(inm)) = (etag, headers.get("if-none-match")) {
        if inm.to_str().unwrap_or_default() == etag {
            return StatusCode::NOT_MODIFIED.into_response();
        }
    }
    let body = match page.stream {
        Stream::Whole => Body::from(page.body),
        Stream::Drip(interval) => {
            let first = futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(Bytes::from(page.body))
            });
            let drip = futures_util::stream::unfold((), move |()| async move {
                tokio::time::sleep(interval).await;
                Some((Ok(Bytes::from_static(b" ")), ()))
            });
            Body::from_stream(first.chain(drip))
        }
        Stream::Endless => {
            let first = futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(Bytes::from(page.body))
            });
            let filler =
                futures_util::stream::repeat_with(|| Ok(Bytes::from(vec![b'x'; 64 * 1024])));
            Body::from_stream(first.chain(filler))
        }
    };
    let mut response = (StatusCode::from_u16(page.status).unwrap(), body).into_response();
    for (k, v) in page.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    response
}
