//! An embedding request's inputs, held compactly and embedded in bounded chunks, so that the
//! memory a request takes does not grow with its number of inputs beyond the texts
//! themselves: the vectors of a chunk are written to the (streamed) answer before the next
//! chunk is tokenised.
//!
//! Every input is tokenised once up front to find errors (too long without truncation) while
//! a clean 400 can still be answered; only the first chunk's tokens are kept, the others are
//! tokenised again when their turn comes (tokenising is cheap next to a forward pass).

use super::error::ApiError;
use crate::engine::{Engine, KeepAlive, Lease};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A chunk ends at this many inputs or once it holds this many tokens.
pub const CHUNK_INPUTS: usize = 256;
pub const CHUNK_TOKENS: usize = 8192;

/// The texts of a request in one buffer, with their end offsets.
#[derive(Debug, Default, PartialEq)]
pub struct Texts {
    all: String,
    ends: Vec<usize>,
}

impl Texts {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.all[start..self.ends[i]]
    }

    /// One input, or none for `""` (the legacy endpoint's `prompt`).
    pub fn one(s: &str) -> Texts {
        let mut t = Texts::default();
        if !s.is_empty() {
            t.push(s);
        }
        t
    }

    fn push(&mut self, s: &str) {
        self.all.push_str(s);
        self.ends.push(self.all.len());
    }

    /// `input` as a string or a list of strings, at most `max` of them. `""` is no input
    /// unless `empty_is_one` (OpenAI's reading).
    pub fn parse(
        input: Option<&RawValue>,
        max: usize,
        empty_is_one: bool,
    ) -> Result<Texts, ApiError> {
        let Some(raw) = input else {
            return Ok(Texts::default());
        };
        let mut texts = Texts::default();
        let mut over = false;
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let parsed = de.deserialize_any(InputVisitor {
            texts: &mut texts,
            max,
            over: &mut over,
            empty_is_one,
        });
        if over {
            return Err(ApiError::bad(format!(
                "too many inputs: at most {max} per request (QUIVER_MAX_INPUTS)"
            )));
        }
        parsed.map_err(|_| ApiError::bad("invalid input type"))?;
        Ok(texts)
    }
}

struct InputVisitor<'a> {
    texts: &'a mut Texts,
    max: usize,
    over: &'a mut bool,
    empty_is_one: bool,
}

impl<'de> Visitor<'de> for InputVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        if !s.is_empty() || self.empty_is_one {
            self.texts.push(s);
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // `null`: no input, as when the field is absent.
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            if self.texts.len() == self.max {
                // One more element is one too many; an end of list is fine.
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    *self.over = true;
                    return Err(de::Error::custom("too many inputs"));
                }
                return Ok(());
            }
            if seq.next_element_seed(Append(self.texts))?.is_none() {
                return Ok(());
            }
        }
    }
}

/// One list element, appended to the buffer without a String of its own.
struct Append<'a>(&'a mut Texts);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Append<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.push(s);
        Ok(())
    }
}

/// Why a running job stopped: the model failed (nothing written yet for this chunk), or the
/// answer could not be written.
#[derive(Debug)]
pub enum RunError {
    Model(ApiError),
    Write(io::Error),
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> RunError {
        RunError::Write(e)
    }
}

impl From<RunError> for io::Error {
    fn from(e: RunError) -> io::Error {
        match e {
            RunError::Model(e) => io::Error::other(e.message),
            RunError::Write(e) => e,
        }
    }
}

/// An embedding request whose inputs have all been checked, ready to run chunk by chunk.
pub struct EmbedJob {
    lease: Lease,
    model: String,
    texts: Texts,
    truncate: bool,
    num_ctx: Option<usize>,
    /// The first chunk's token sequences (the whole request when it is small).
    first: Vec<Vec<u32>>,
    /// The first chunk's vectors, once [`EmbedJob::embed_first`] ran, and the time it took.
    ready: Vec<Vec<f32>>,
    ready_took: Duration,
    /// Tokens over all inputs (`prompt_eval_count`).
    pub tokens: usize,
    pub load_duration: Duration,
}

impl EmbedJob {
    /// Loads the model (or finds it loaded) and tokenises every input once to find errors.
    pub fn start(
        engine: &Arc<Engine>,
        model: &str,
        texts: Texts,
        truncate: bool,
        num_ctx: Option<usize>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<EmbedJob, ApiError> {
        let lease = engine
            .acquire(model, keep_alive)
            .map_err(|e| ApiError::from_engine(e, model))?;
        let mut job = EmbedJob {
            load_duration: lease.load_duration,
            lease,
            model: model.to_string(),
            texts,
            truncate,
            num_ctx,
            first: Vec::new(),
            ready: Vec::new(),
            ready_took: Duration::ZERO,
            tokens: 0,
        };
        let mut in_first = true;
        let mut first_tokens = 0;
        for i in 0..job.texts.len() {
            let seq = job.prepare(i)?;
            job.tokens += seq.len();
            if in_first && job.first.len() < CHUNK_INPUTS && first_tokens < CHUNK_TOKENS {
                first_tokens += seq.len();
                job.first.push(seq);
            } else {
                in_first = false;
            }
        }
        super::metrics::note(model, job.texts.len(), job.tokens);
        Ok(job)
    }

    fn prepare(&self, i: usize) -> Result<Vec<u32>, ApiError> {
        self.lease
            .model()
            .prepare(self.texts.get(i), self.num_ctx, self.truncate)
            .map_err(ApiError::from)
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Embeds the first chunk now, before anything is written: a model that fails on it
    /// (every request of one chunk) is answered with its error status, not a cut answer.
    pub fn embed_first(&mut self) -> Result<(), ApiError> {
        let started = Instant::now();
        self.ready = self
            .lease
            .embed_tokens(std::mem::take(&mut self.first))
            .map_err(|e| ApiError::from_engine(e, &self.model))?;
        self.ready_took = started.elapsed();
        Ok(())
    }

    /// Embeds chunk after chunk, calling `each` with every pooled, unnormalised vector in
    /// input order. Returns the time the model work took. A model error after the first
    /// chunk can only cut the answer short (its status is out): the caller drops the
    /// connection without the last chunk, which clients read as a failed request.
    pub fn run(
        mut self,
        mut each: impl FnMut(usize, Vec<f32>) -> io::Result<()>,
    ) -> Result<Duration, RunError> {
        let started = Instant::now() - self.ready_took;
        let mut next = 0;
        for v in std::mem::take(&mut self.ready) {
            each(next, v)?;
            next += 1;
        }
        let mut chunk = std::mem::take(&mut self.first);
        while next < self.texts.len() {
            if chunk.is_empty() {
                let mut tokens = 0;
                while next + chunk.len() < self.texts.len()
                    && chunk.len() < CHUNK_INPUTS
                    && tokens < CHUNK_TOKENS
                {
                    let seq = self.prepare(next + chunk.len()).map_err(RunError::Model)?;
                    tokens += seq.len();
                    chunk.push(seq);
                }
            }
            let n = chunk.len();
            let vectors = self
                .lease
                .embed_tokens(std::mem::take(&mut chunk))
                .map_err(|e| RunError::Model(ApiError::from_engine(e, &self.model)))?;
            for (i, v) in vectors.into_iter().enumerate() {
                each(next + i, v)?;
            }
            next += n;
        }
        Ok(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, max: usize) -> Result<Texts, ApiError> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        Texts::parse(Some(&raw), max, false)
    }

    #[test]
    fn inputs_parse_into_one_buffer() {
        let t = parse(r#"["a", "", "b\"c", "é"]"#, 10).unwrap();
        let got: Vec<&str> = (0..t.len()).map(|i| t.get(i)).collect();
        assert_eq!(got, ["a", "", "b\"c", "é"]);
        assert_eq!(parse(r#""one""#, 10).unwrap().len(), 1);
        assert!(parse(r#""""#, 10).unwrap().is_empty());
        assert!(parse("null", 10).unwrap().is_empty());
        let raw: Box<RawValue> = serde_json::from_str(r#""""#).unwrap();
        assert_eq!(Texts::parse(Some(&raw), 10, true).unwrap().len(), 1);
    }

    #[test]
    fn wrong_types_and_too_many_inputs_are_400() {
        for bad in [
            "5",
            "[1]",
            r#"["a", null]"#,
            r#"{"a":1}"#,
            "true",
            r#"[["a"]]"#,
        ] {
            let e = parse(bad, 10).unwrap_err();
            assert_eq!(
                (e.status, e.message.as_str()),
                (400, "invalid input type"),
                "{bad}"
            );
        }
        assert_eq!(parse(r#"["a","b","c"]"#, 3).unwrap().len(), 3);
        let e = parse(r#"["a","b","c","d"]"#, 3).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("too many inputs"), "{}", e.message);
    }
}
