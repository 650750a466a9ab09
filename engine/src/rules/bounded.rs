//! Built-ins whose result can be far larger than their inputs, replaced by versions that check
//! the size of what they would build before they build it.
//!
//! rhai checks a value's size after the call that made it returns, and the clock and the
//! operation count between operations, so a single call could allocate gigabytes before any check
//! ran: `s.replace("a", s)` with a 10,000-byte `s` built 100 MB, and `xs.map(|x| ys)` 10,000
//! copies of a 10,000-item array. Registered in the engine's own namespace, these take the place
//! of rhai's functions of the same name and argument types:
//!
//! - `replace` (all four forms): the result's length is computed from the number of matches;
//! - `split` and `split_rev` (every form) and `to_chars`: the pieces are counted first;
//! - `map` (of an array or an object map), `zip` and `for_each`: what they build is added up as
//!   each call of the function returns, and the call that passes a limit ends the loop.
//!
//! The limits are the engine's own (`max_string_size`, `max_array_size`, `max_map_size`, counted
//! as rhai counts them, through nested arrays and maps), so these refuse only what rhai would have
//! refused after building it; otherwise they do what rhai's do. Other built-ins build at most a
//! small multiple of their inputs (`+`, `pad` and `blob` are checked by rhai before they
//! allocate), and the time limit stops a loop of them.

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration};
use rhai::{ImmutableString, Map, NativeCallContext, Position, INT};

use super::{Measure, RuleError};

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

/// Registers the bounded built-ins on `engine` (after its limits are set).
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: &str, with: &str| {
            replace(&ctx, s, find, with)
        },
    );
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: &str, with: char| {
            replace(&ctx, s, find, with.encode_utf8(&mut [0; 4]))
        },
    );
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: char, with: &str| {
            replace(&ctx, s, find.encode_utf8(&mut [0; 4]), with)
        },
    );
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: char, with: char| {
            replace(
                &ctx,
                s,
                find.encode_utf8(&mut [0; 4]),
                with.encode_utf8(&mut [0; 4]),
            )
        },
    );

    // `split` and the rest are pure in rhai (they may be called on `record`, a constant).
    pure(
        "split",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: &str| {
            split(&ctx, "split", s, by, None, false)
        },
    );
    pure(
        "split",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: &str, n: INT| {
            split(&ctx, "split", s, by, Some(n), false)
        },
    );
    pure(
        "split",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: char| {
            split(&ctx, "split", s, by.encode_utf8(&mut [0; 4]), None, false)
        },
    );
    pure(
        "split",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: char, n: INT| {
            split(
                &ctx,
                "split",
                s,
                by.encode_utf8(&mut [0; 4]),
                Some(n),
                false,
            )
        },
    );
    pure(
        "split_rev",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: &str| {
            split(&ctx, "split_rev", s, by, None, true)
        },
    );
    pure(
        "split_rev",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: &str, n: INT| {
            split(&ctx, "split_rev", s, by, Some(n), true)
        },
    );
    pure(
        "split_rev",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: char| {
            split(
                &ctx,
                "split_rev",
                s,
                by.encode_utf8(&mut [0; 4]),
                None,
                true,
            )
        },
    );
    pure(
        "split_rev",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString, by: char, n: INT| {
            split(
                &ctx,
                "split_rev",
                s,
                by.encode_utf8(&mut [0; 4]),
                Some(n),
                true,
            )
        },
    );
    pure(
        "split",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString| {
            let (pieces, bytes) = s
                .split_whitespace()
                .fold((0, 0), |(n, bytes), piece| (n + 1, bytes + piece.len()));
            Budget::new(&ctx, "split").array(pieces.max(1), bytes)?;
            Ok::<Array, Box<EvalAltResult>>(if s.is_empty() {
                vec![s.clone().into()]
            } else {
                s.split_whitespace().map(Into::into).collect()
            })
        },
    );
    pure(
        "to_chars",
        engine,
        |ctx: NativeCallContext, s: &mut ImmutableString| {
            Budget::new(&ctx, "to_chars").array(s.chars().count(), 0)?;
            Ok::<Array, Box<EvalAltResult>>(s.chars().map(Into::into).collect())
        },
    );

    pure("map", engine, map_array);
    pure("map", engine, map_map);
    pure("zip", engine, zip);
    engine.register_fn("for_each", for_each);
}

/// Registers `func` as a pure function (one that may be called on a constant).
fn pure<
    A: 'static,
    const N: usize,
    const X: bool,
    R: Clone + Send + Sync + 'static,
    const F: bool,
>(
    name: &str,
    engine: &mut Engine,
    func: impl rhai::RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
) {
    FuncRegistration::new(name)
        .in_global_namespace()
        .with_purity(true)
        .register_into_engine(engine, func);
}

fn too_large(error: RuleError) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(error),
        Position::NONE,
    ))
}

/// rhai's `replace`, refusing a result over the string limit before building it.
fn replace(ctx: &NativeCallContext, s: &mut ImmutableString, find: &str, with: &str) -> Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    // An empty `find` matches at every character boundary, as `str::replace` has it.
    let matches = s.matches(find).count() as u64;
    let size = (s.len() as u64 - matches * find.len() as u64)
        .saturating_add(matches.saturating_mul(with.len() as u64));
    let limit = ctx.engine().max_string_size() as u64;
    if limit > 0 && size > limit {
        return Err(too_large(RuleError::TooLarge {
            by: Some("replace"),
            measure: Measure::String,
            size: Some(size),
            limit,
        }));
    }
    *s = s.replace(find, with).into();
    Ok(())
}

/// rhai's `split` and `split_rev` (with at most `n` pieces), counting the pieces first.
fn split(
    ctx: &NativeCallContext,
    name: &'static str,
    s: &mut ImmutableString,
    by: &str,
    n: Option<INT>,
    reverse: bool,
) -> Result<Array> {
    if n.is_some_and(|n| n <= 1) || s.is_empty() || (!by.is_empty() && !s.contains(by)) {
        return Ok(vec![s.clone().into()]);
    }
    let n = n.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let pieces = s.matches(by).count().saturating_add(1).min(n);
    // The pieces hold the text less the delimiters between them.
    Budget::new(ctx, name).array(pieces, s.len() - (pieces - 1) * by.len())?;
    Ok(match (reverse, n) {
        (false, usize::MAX) => s.split(by).map(Into::into).collect(),
        (false, n) => s.splitn(n, by).map(Into::into).collect(),
        (true, usize::MAX) => s.rsplit(by).map(Into::into).collect(),
        (true, n) => s.rsplitn(n, by).map(Into::into).collect(),
    })
}

/// rhai's `map` of an array, adding up the result as it grows.
fn map_array(ctx: NativeCallContext, array: &mut Array, f: FnPtr) -> Result<Array> {
    let mut budget = Budget::new(&ctx, "map");
    let mut out = Array::with_capacity(array.len());
    for (i, item) in array.iter_mut().enumerate() {
        let value = call(&ctx, &f, "map", Some(item), &[], &[index(i)], Some(0))?;
        budget.item(&value)?;
        out.push(value);
    }
    Ok(out)
}

/// rhai's `map` of an object map (`|key| this` or `|key, value|`), adding up the result.
fn map_map(ctx: NativeCallContext, map: &mut Map, f: FnPtr) -> Result<Map> {
    let mut budget = Budget::new(&ctx, "map");
    let mut out = Map::new();
    for (key, item) in map.iter_mut() {
        // rhai names its own `map` of a map "filter" in errors; this one says `map`.
        let value = call(&ctx, &f, "map", Some(item), &[key.into()], &[], Some(1))?;
        budget.entry(&value)?;
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// rhai's `zip`, adding up the result as it grows.
fn zip(ctx: NativeCallContext, array: &mut Array, other: Array, f: FnPtr) -> Result<Array> {
    let mut budget = Budget::new(&ctx, "zip");
    let mut out = Array::with_capacity(array.len().min(other.len()));
    for (i, (x, y)) in array.iter_mut().zip(other).enumerate() {
        let value = call(&ctx, &f, "zip", None, &[x.clone(), y], &[index(i)], None)?;
        budget.item(&value)?;
        out.push(value);
    }
    Ok(out)
}

/// rhai's `for_each` (`this` is each item, and may be changed), adding up the array as its items
/// change.
fn for_each(ctx: NativeCallContext, array: &mut Array, f: FnPtr) -> Result<()> {
    let mut budget = Budget::new(&ctx, "for_each");
    for item in array.iter() {
        budget.add(sizes(item), 1, 0)?;
    }
    for (i, item) in array.iter_mut().enumerate() {
        let before = sizes(item);
        let _ = call(&ctx, &f, "for_each", Some(item), &[], &[index(i)], None)?;
        budget.replace(before, sizes(item))?;
    }
    Ok(())
}

fn index(i: usize) -> Dynamic {
    INT::try_from(i).unwrap_or(INT::MAX).into()
}

/// Calls `f` as rhai's own iterating built-ins do: with `args` and `this` bound to the item;
/// when `f` does not take that form, with the item moved into the arguments at `this_at`; then
/// with `extras` (the index) appended. Errors are wrapped as rhai wraps them (`in call to function
/// 'map'`).
fn call(
    ctx: &NativeCallContext,
    f: &FnPtr,
    caller: &str,
    mut this: Option<&mut Dynamic>,
    args: &[Dynamic],
    extras: &[Dynamic],
    this_at: Option<usize>,
) -> Result<Dynamic> {
    let not_found = |err: &EvalAltResult| matches!(err, EvalAltResult::ErrorFunctionNotFound(sig, ..) if sig.starts_with(f.fn_name()));
    let mut result = f.call_raw(ctx, this.as_deref_mut(), args.to_vec());
    let missing = |result: &Result<Dynamic>| matches!(result, Err(err) if not_found(err));
    if let (true, Some(at), Some(item)) = (missing(&result), this_at, this.as_deref()) {
        let mut moved = args.to_vec();
        moved.insert(at, item.clone());
        result = f.call_raw(ctx, None, moved);
    }
    if missing(&result) {
        let mut all: Vec<Dynamic> = args.iter().chain(extras).cloned().collect();
        result = match (this_at, this) {
            (Some(at), Some(item)) => {
                all.insert(at, item.clone());
                f.call_raw(ctx, None, all)
            }
            (_, this) => f.call_raw(ctx, this, all),
        };
    }
    result.map_err(|err| {
        Box::new(EvalAltResult::ErrorInFunctionCall(
            caller.to_owned(),
            ctx.call_source().unwrap_or_default().to_owned(),
            err,
            Position::NONE,
        ))
    })
}

/// Array items, object map entries and string bytes, as rhai counts a value against its limits.
type Sizes = (u64, u64, u64);

/// The sizes of `value`: arrays count their items (a blob its bytes) and maps their entries,
/// through every level, and strings their bytes.
fn sizes(value: &Dynamic) -> Sizes {
    if value.is_shared() {
        return sizes(&value.flatten_clone());
    }
    if let Some(array) = value.read_lock::<Array>() {
        return array.iter().fold((0, 0, 0), |acc, item| {
            let (a, m, s) = sizes(item);
            (acc.0 + 1 + a, acc.1 + m, acc.2 + s)
        });
    }
    if let Some(map) = value.read_lock::<Map>() {
        return map.values().fold((0, 0, 0), |acc, item| {
            let (a, m, s) = sizes(item);
            (acc.0 + a, acc.1 + 1 + m, acc.2 + s)
        });
    }
    if let Some(blob) = value.read_lock::<rhai::Blob>() {
        return (blob.len() as u64, 0, 0);
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return (0, 0, s.len() as u64);
    }
    (0, 0, 0)
}

/// What a built-in has built so far, against the engine's limits.
struct Budget {
    by: &'static str,
    used: Sizes,
    limits: Sizes,
}

impl Budget {
    fn new(ctx: &NativeCallContext, by: &'static str) -> Budget {
        let engine = ctx.engine();
        let limit = |n: usize| if n == 0 { u64::MAX } else { n as u64 };
        Budget {
            by,
            used: (0, 0, 0),
            limits: (
                limit(engine.max_array_size()),
                limit(engine.max_map_size()),
                limit(engine.max_string_size()),
            ),
        }
    }

    /// An array of `pieces` strings holding `bytes` in all, before it is built.
    fn array(mut self, pieces: usize, bytes: usize) -> Result<()> {
        let (items, bytes) = (pieces as u64, bytes as u64);
        if items > self.limits.0 {
            return Err(too_large(RuleError::TooLarge {
                by: Some(self.by),
                measure: Measure::Array,
                size: Some(items),
                limit: self.limits.0,
            }));
        }
        self.add((0, 0, bytes), 0, 0)
    }

    /// One more item of an array being built.
    fn item(&mut self, value: &Dynamic) -> Result<()> {
        self.add(sizes(value), 1, 0)
    }

    /// One more entry of an object map being built.
    fn entry(&mut self, value: &Dynamic) -> Result<()> {
        self.add(sizes(value), 0, 1)
    }

    /// An item that changed from `before` to `after`.
    fn replace(&mut self, before: Sizes, after: Sizes) -> Result<()> {
        self.used = (
            self.used.0.saturating_sub(before.0),
            self.used.1.saturating_sub(before.1),
            self.used.2.saturating_sub(before.2),
        );
        self.add(after, 0, 0)
    }

    fn add(&mut self, (a, m, s): Sizes, items: u64, entries: u64) -> Result<()> {
        self.used = (
            self.used.0.saturating_add(a + items),
            self.used.1.saturating_add(m + entries),
            self.used.2.saturating_add(s),
        );
        let over = |measure, limit| {
            Err(too_large(RuleError::TooLarge {
                by: Some(self.by),
                measure,
                size: None,
                limit,
            }))
        };
        if self.used.2 > self.limits.2 {
            return over(Measure::Strings, self.limits.2);
        }
        if self.used.0 > self.limits.0 {
            return over(Measure::Array, self.limits.0);
        }
        if self.used.1 > self.limits.1 {
            return over(Measure::Map, self.limits.1);
        }
        Ok(())
    }
}
