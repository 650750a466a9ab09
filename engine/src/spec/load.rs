//! Loading a workflow file into a [`WorkflowSpec`], collecting every error with its position.

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use serde_yaml::Value as Yaml;

use super::{
    ApiSpec, BeginSpec, BlockId, BlockSpec, EndSpec, Location, RoleRetrievalSpec, Source,
    SourceMap, Targets, WaitSpec, WorkflowSpec, YamlPath,
};
use crate::compile::{suggest, CompileError, CompileErrorKind};
use crate::spec::location::Segment;

/// A loaded workflow: the spec, the blocks that could not be read, and the positions of everything.
#[derive(Debug)]
pub struct LoadedSpec {
    pub source: Source,
    pub spec: WorkflowSpec,
    /// Blocks whose contents had errors (already reported). They still take part in the graph
    /// checks, so that one bad block does not make every edge to it an error too.
    pub broken: IndexMap<BlockId, BrokenBlock>,
    /// Positions, built on first use: a valid file never needs them.
    map: std::cell::OnceCell<SourceMap>,
}

impl LoadedSpec {
    /// The positions of every key and value (built on first call).
    pub fn map(&self) -> &SourceMap {
        self.map.get_or_init(|| SourceMap::build(&self.source.text))
    }

    /// An error at the key of `path`.
    pub fn error_at_key(
        &self,
        path: &YamlPath,
        block: Option<&BlockId>,
        kind: CompileErrorKind,
    ) -> CompileError {
        error_at(&self.source, self.map(), true, path, block, kind)
    }

    /// An error at the value of `path`.
    pub fn error_at_value(
        &self,
        path: &YamlPath,
        block: Option<&BlockId>,
        kind: CompileErrorKind,
    ) -> CompileError {
        error_at(&self.source, self.map(), false, path, block, kind)
    }
}

/// An error in `source` at the key of `path` when `at_key`, else at its value.
fn error_at(
    source: &Source,
    map: &SourceMap,
    at_key: bool,
    path: &YamlPath,
    block: Option<&BlockId>,
    kind: CompileErrorKind,
) -> CompileError {
    let location = if at_key {
        map.key_location(path)
    } else {
        map.value_location(path)
    };
    CompileError {
        file: source.path.clone(),
        location,
        block: block.cloned(),
        kind,
    }
}

/// What is known of a block that did not load.
#[derive(Debug, Clone, Default)]
pub struct BrokenBlock {
    /// Its `type`, when that much was readable.
    pub type_name: Option<String>,
    pub next: Targets,
    pub on_failure: Targets,
}

/// Loads a workflow from text (for tests and callers that already hold the text).
pub fn load_str(path: &str, text: &str) -> Result<LoadedSpec, Vec<CompileError>> {
    load(Source::new(path, text))
}

/// Loads a workflow, returning every error found when it cannot be used.
pub fn load(source: Source) -> Result<LoadedSpec, Vec<CompileError>> {
    match load_partial(source) {
        (Some(loaded), errors) if errors.is_empty() => Ok(loaded),
        (_, errors) => Err(errors),
    }
}

/// Loads as much of a workflow as can be read: the spec (without the blocks that had errors, which
/// are listed in [`LoadedSpec::broken`]) and every error found. The spec is `None` only when the
/// document as a whole is unusable (a YAML syntax error, no `name` or `blocks`).
pub fn load_partial(source: Source) -> (Option<LoadedSpec>, Vec<CompileError>) {
    let bounded = |source: &Source| {
        super::limits::check(&source.text).map_err(|err| CompileError {
            file: source.path.clone(),
            location: err.location,
            block: None,
            kind: CompileErrorKind::YamlLimit { limit: err.limit },
        })
    };
    // Aliases expand inside serde_yaml: bound them first when there can be any (see `limits`).
    let anchored = source.text.contains('&');
    if anchored {
        if let Err(err) = bounded(&source) {
            return (None, vec![err]);
        }
    }
    // The fast path: one typed pass, no positions. Any error, including a duplicate key, sends the
    // file down the precise path, which finds every error and where it is.
    if let Ok(spec) = serde_yaml::from_str::<WorkflowSpec>(&source.text) {
        let loaded = LoadedSpec {
            source,
            spec,
            broken: IndexMap::new(),
            map: std::cell::OnceCell::new(),
        };
        return (Some(loaded), Vec::new());
    }
    // The position map grows with the nesting: bound it first.
    if !anchored {
        if let Err(err) = bounded(&source) {
            return (None, vec![err]);
        }
    }
    let map = SourceMap::build(&source.text);
    let mut loader = Loader {
        source: &source,
        map: &map,
        errors: Vec::new(),
    };
    let result = loader.load();
    let errors = loader.errors;
    let loaded = result.map(|(spec, broken)| LoadedSpec {
        source,
        spec,
        broken,
        map: std::cell::OnceCell::from(map),
    });
    (loaded, errors)
}

struct Loader<'a> {
    source: &'a Source,
    map: &'a SourceMap,
    errors: Vec<CompileError>,
}

/// Top-level keys other than `blocks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    vars: IndexMap<String, Value>,
    #[serde(default)]
    notify: Option<crate::notify::NotifySpec>,
    guard: Option<crate::compile::GuardSpec>,
    #[serde(default)]
    timezone: Option<String>,
}

/// `blocks` is taken out before the rest of the top level is read, so serde never lists it.
const ALSO_AT_TOP_LEVEL: &[&str] = &["blocks"];

impl Loader<'_> {
    fn push(
        &mut self,
        at_key: bool,
        path: &YamlPath,
        block: Option<&BlockId>,
        kind: CompileErrorKind,
    ) {
        let err = error_at(self.source, self.map, at_key, path, block, kind);
        self.errors.push(err);
    }

    fn load(&mut self) -> Option<(WorkflowSpec, IndexMap<BlockId, BrokenBlock>)> {
        if !self.map.duplicates().is_empty() {
            for duplicate in self.map.duplicates().to_vec() {
                let segments = duplicate.path.segments();
                let kind = match segments {
                    [Segment::Key(blocks), Segment::Key(_)] if blocks == "blocks" => {
                        CompileErrorKind::DuplicateBlock {
                            first: duplicate.first,
                        }
                    }
                    _ => CompileErrorKind::DuplicateKey {
                        key: duplicate.path.last_key().unwrap_or_default().to_owned(),
                        first: duplicate.first,
                    },
                };
                let block = match segments {
                    [Segment::Key(blocks), Segment::Key(id), ..] if blocks == "blocks" => {
                        Some(BlockId::new(id.clone()))
                    }
                    _ => None,
                };
                self.errors.push(CompileError {
                    file: self.source.path.clone(),
                    location: duplicate.again,
                    block,
                    kind,
                });
            }
            return None;
        }
        let document: Yaml = match serde_yaml::from_str(&self.source.text) {
            Ok(document) => document,
            Err(err) => {
                self.errors.push(CompileError {
                    file: self.source.path.clone(),
                    location: yaml_error_location(&err),
                    block: None,
                    kind: CompileErrorKind::Syntax {
                        message: strip_position(&err.to_string()),
                    },
                });
                return None;
            }
        };
        let root = YamlPath::root();
        let Yaml::Mapping(mut top) = document else {
            self.push(false, &root, None, CompileErrorKind::NotAWorkflow);
            return None;
        };
        let blocks = top.remove("blocks");
        let header: Header = self.deserialize(
            Yaml::Mapping(top),
            &root,
            None,
            "the workflow",
            ALSO_AT_TOP_LEVEL,
        )?;
        let blocks_path = root.key("blocks");
        let blocks = match blocks {
            None => {
                self.push(
                    false,
                    &root,
                    None,
                    CompileErrorKind::MissingKey {
                        key: "blocks".to_owned(),
                        within: "the workflow".to_owned(),
                    },
                );
                return None;
            }
            Some(Yaml::Mapping(blocks)) => blocks,
            Some(_) => {
                self.push(
                    false,
                    &blocks_path,
                    None,
                    CompileErrorKind::InvalidValue {
                        key: "blocks".to_owned(),
                        message: "expected a mapping from block id to block".to_owned(),
                    },
                );
                return None;
            }
        };
        let mut spec_blocks = IndexMap::new();
        let mut broken = IndexMap::new();
        for (id, block) in blocks {
            let Some(id) = id.as_str().map(str::to_owned) else {
                self.push(
                    true,
                    &blocks_path,
                    None,
                    CompileErrorKind::InvalidValue {
                        key: "blocks".to_owned(),
                        message: "block ids must be strings".to_owned(),
                    },
                );
                continue;
            };
            let id = BlockId::new(id);
            match self.load_block(&id, block, &blocks_path.key(id.as_str())) {
                Ok(block) => {
                    spec_blocks.insert(id, block);
                }
                Err(partial) => {
                    broken.insert(id, partial);
                }
            }
        }
        Some((
            WorkflowSpec {
                name: header.name,
                description: header.description,
                vars: header.vars,
                blocks: spec_blocks,
                notify: header.notify,
                guard: header.guard,
                timezone: header.timezone,
            },
            broken,
        ))
    }

    fn load_block(
        &mut self,
        id: &BlockId,
        block: Yaml,
        path: &YamlPath,
    ) -> Result<BlockSpec, BrokenBlock> {
        let Yaml::Mapping(mut fields) = block else {
            self.push(
                false,
                path,
                Some(id),
                CompileErrorKind::InvalidValue {
                    key: id.to_string(),
                    message: "a block is a mapping with `type` and its settings".to_owned(),
                },
            );
            return Err(BrokenBlock::default());
        };
        let mut partial = BrokenBlock {
            type_name: None,
            next: edges_of(&fields, "next"),
            on_failure: edges_of(&fields, "on_failure"),
        };
        let type_path = path.key("type");
        let type_name = match fields.remove("type") {
            None => {
                self.push(true, path, Some(id), CompileErrorKind::MissingBlockType);
                return Err(partial);
            }
            Some(Yaml::String(name)) => name,
            Some(other) => {
                let found = serde_yaml::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                self.push(
                    false,
                    &type_path,
                    Some(id),
                    CompileErrorKind::UnknownBlockType {
                        found,
                        suggestion: None,
                    },
                );
                return Err(partial);
            }
        };
        partial.type_name = Some(type_name.clone());
        let body = Yaml::Mapping(fields);
        let within = String::new();
        let block = match type_name.as_str() {
            "begin" => self
                .deserialize::<BeginSpec>(body, path, Some(id), &within, &[])
                .map(|b| BlockSpec::Begin(Box::new(b))),
            "api" => self
                .deserialize::<ApiSpec>(body, path, Some(id), &within, &[])
                .map(|b| BlockSpec::Api(Box::new(b))),
            "role_retrieval" => self
                .deserialize::<RoleRetrievalSpec>(body, path, Some(id), &within, &[])
                .map(|b| BlockSpec::RoleRetrieval(Box::new(b))),
            "wait" => self
                .deserialize::<WaitSpec>(body, path, Some(id), &within, &[])
                .map(|b| BlockSpec::Wait(Box::new(b))),
            "end" => self
                .deserialize::<EndSpec>(body, path, Some(id), &within, &[])
                .map(BlockSpec::End),
            other => {
                let suggestion = suggest(other, BlockSpec::TYPES);
                self.push(
                    false,
                    &type_path,
                    Some(id),
                    CompileErrorKind::UnknownBlockType {
                        found: other.to_owned(),
                        suggestion,
                    },
                );
                None
            }
        };
        block.ok_or(partial)
    }

    /// Deserializes `value` (found at `path`) into `T`, reporting every unknown key (each is removed
    /// and the value retried) and the first other error. Suggestions come from the keys serde
    /// lists as expected, plus `also` (keys valid at `path` that were read separately).
    fn deserialize<T: DeserializeOwned>(
        &mut self,
        mut value: Yaml,
        path: &YamlPath,
        block: Option<&BlockId>,
        within: &str,
        also: &[&str],
    ) -> Option<T> {
        for _ in 0..64 {
            let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                // Unknown keys were reported and removed; the rest is still checked.
                Ok(parsed) => return Some(parsed),
                Err(err) => err,
            };
            let error_path = path.join_serde(err.path());
            let message = err.inner().to_string();
            // How a mapping is named in a message: the block (or workflow) itself, or its key path.
            let name = |mapping: &YamlPath| {
                if mapping == path {
                    within.to_owned()
                } else {
                    format!("`{}`", relative(mapping, path))
                }
            };
            if let Some((key, expected)) = parse_unknown_field(&message) {
                let parent = error_path.parent().unwrap_or_default();
                let mut candidates: Vec<&str> = expected.iter().map(String::as_str).collect();
                if parent == *path {
                    candidates.extend_from_slice(also);
                }
                self.push(
                    true,
                    &error_path,
                    block,
                    CompileErrorKind::UnknownKey {
                        suggestion: suggest(&key, candidates),
                        key,
                        within: name(&parent),
                    },
                );
                let relative_segments = &error_path.segments()[path.segments().len()..];
                if !remove_at(&mut value, relative_segments) {
                    return None;
                }
                continue;
            }
            if let Some(key) = parse_missing_field(&message) {
                // Point at the mapping's key (the block id), where the missing key belongs.
                let within = name(&error_path);
                self.push(
                    true,
                    &error_path,
                    block,
                    CompileErrorKind::MissingKey { key, within },
                );
                return None;
            }
            let key = if error_path == *path {
                within.trim_matches('`').to_owned()
            } else {
                relative(&error_path, path)
            };
            self.push(
                false,
                &error_path,
                block,
                CompileErrorKind::InvalidValue {
                    key,
                    message: reword(&message),
                },
            );
            return None;
        }
        None
    }
}

/// The edges of a block that did not load, read on their own so graph checks still see them.
fn edges_of(fields: &serde_yaml::Mapping, key: &str) -> Targets {
    fields
        .get(key)
        .and_then(|v| Targets::deserialize(v.clone()).ok())
        .unwrap_or_default()
}

/// `path` written relative to `base` (`retry.max_attempts`).
fn relative(path: &YamlPath, base: &YamlPath) -> String {
    let rest = YamlPath::root();
    let rest = path.segments()[base.segments().len().min(path.segments().len())..]
        .iter()
        .fold(rest, |acc, segment| match segment {
            Segment::Key(key) => acc.key(key),
            Segment::Index(index) => acc.index(*index),
        });
    rest.to_string()
}

/// Removes the entry at `segments` below `value`; false when it is not there.
fn remove_at(value: &mut Yaml, segments: &[Segment]) -> bool {
    match segments {
        [] => false,
        [Segment::Key(key)] => match value {
            Yaml::Mapping(map) => map.remove(key.as_str()).is_some(),
            _ => false,
        },
        [Segment::Index(index)] => match value {
            Yaml::Sequence(items) if *index < items.len() => {
                items.remove(*index);
                true
            }
            _ => false,
        },
        [Segment::Key(key), rest @ ..] => match value {
            Yaml::Mapping(map) => map
                .get_mut(key.as_str())
                .is_some_and(|inner| remove_at(inner, rest)),
            _ => false,
        },
        [Segment::Index(index), rest @ ..] => match value {
            Yaml::Sequence(items) => items
                .get_mut(*index)
                .is_some_and(|inner| remove_at(inner, rest)),
            _ => false,
        },
    }
}

/// `unknown field `x`, expected one of `a`, `b`` → (`x`, [`a`, `b`]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((key.to_owned(), expected))
}

/// `missing field `x`` → `x`.
fn parse_missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let (key, _) = rest.split_once('`')?;
    Some(key.to_owned())
}

/// serde's wording, made to fit ours.
pub(crate) fn reword(message: &str) -> String {
    let message = strip_position(message)
        .replace("expected u32", "expected a whole number")
        .replace("expected u64", "expected a whole number")
        .replace("expected a boolean", "expected `true` or `false`");
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((found, rest)) = rest.split_once('`') {
            return format!("unknown value `{found}`{rest}");
        }
    }
    message
}

/// Where serde_yaml places an error; the start of the file when it does not say.
pub fn yaml_error_location(err: &serde_yaml::Error) -> Location {
    err.location()
        .map(|l| Location::new(l.line() as u32, l.column() as u32))
        .unwrap_or(Location::START)
}

/// serde_yaml writes " at line L column C" into messages; the position is printed separately.
pub fn strip_position(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(at) = out.find(" at line ") {
        let rest = &out[at + " at line ".len()..];
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        let rest = rest.strip_prefix(" column ").unwrap_or(rest);
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        out = format!("{}{}", &out[..at], rest);
    }
    out
}
