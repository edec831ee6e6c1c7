//! PyTorch zip checkpoints (`torch.save` since 1.6): `ARCHIVE/data.pkl` plus one raw storage per
//! `ARCHIVE/data/KEY`. The pickle is interpreted, never executed: only the opcodes of protocol ≤ 4
//! data and a fixed set of constructors (OrderedDict, tensor/parameter rebuild, typed storages) are
//! given meaning; any other class becomes an inert placeholder, and a checkpoint whose tensors sit
//! inside such a placeholder (e.g. a whole pickled `nn.Module`) is refused.

use crate::tensor::{DType, Tensor, TensorMap};
use crate::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Payloads of scalar variants are only read through Debug, in error messages.
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<V>),
    Tuple(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(String),
    Storage { dtype: DType, key: String },
    Tensor(Tensor),
    /// A class or call rws does not interpret.
    Opaque(String),
    Mark,
}

fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "torch.FloatStorage" => DType::F32,
        "torch.DoubleStorage" => DType::F64,
        "torch.HalfStorage" => DType::F16,
        "torch.BFloat16Storage" => DType::BF16,
        "torch.LongStorage" => DType::I64,
        "torch.IntStorage" => DType::I32,
        "torch.ShortStorage" => DType::I16,
        "torch.CharStorage" => DType::I8,
        "torch.ByteStorage" => DType::U8,
        "torch.BoolStorage" => DType::Bool,
        _ => return None,
    })
}

struct Unpickler<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
    storages: &'a dyn Fn(&str) -> Result<Vec<u8>>,
    cache: HashMap<String, Vec<u8>>,
}

impl<'a> Unpickler<'a> {
    fn err(&self, m: impl Into<String>) -> Error {
        Error::format(self.path, format!("data.pkl at byte {}: {}", self.pos, m.into()))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.pos + n > self.data.len() {
            return Err(self.err("truncated pickle"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let i = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err("unterminated line"))?;
        let s = String::from_utf8_lossy(&rest[..i]).into_owned();
        self.pos += i + 1;
        Ok(s)
    }
    fn text(&mut self, n: usize) -> Result<V> {
        let b = self.take(n)?;
        Ok(V::Str(std::str::from_utf8(b).map_err(|_| self.err("string is not UTF-8"))?.to_string()))
    }

    fn run(&mut self) -> Result<V> {
        let mut stack: Vec<V> = Vec::new();
        let mut memo: HashMap<u32, V> = HashMap::new();
        macro_rules! pop {
            () => {
                stack.pop().ok_or_else(|| self.err("stack underflow"))?
            };
        }
        let pop_mark = |stack: &mut Vec<V>, me: &Self| -> Result<Vec<V>> {
            let i = stack.iter().rposition(|v| matches!(v, V::Mark)).ok_or_else(|| me.err("no MARK"))?;
            let items = stack.split_off(i + 1);
            stack.pop();
            Ok(items)
        };
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(format!("pickle protocol {p} is not supported")));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return stack.pop().ok_or_else(|| self.err("empty stack at STOP")),
                b'}' => stack.push(V::Dict(vec![])),
                b']' => stack.push(V::List(vec![])),
                b')' => stack.push(V::Tuple(vec![])),
                b'(' => stack.push(V::Mark),
                b'N' => stack.push(V::None),
                0x88 => stack.push(V::Bool(true)),
                0x89 => stack.push(V::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    stack.push(V::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    stack.push(V::Int(v as i64))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().unwrap());
                    stack.push(V::Int(v as i64))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.err("integer wider than 64 bits"));
                    }
                    let mut buf = if b.last().map(|x| x & 0x80 != 0).unwrap_or(false) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    stack.push(V::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    stack.push(V::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    stack.push(v)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    stack.push(v)
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    stack.push(v)
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    stack.push(v)
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    stack.push(V::Bytes(self.take(n)?.to_vec()))
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    stack.push(V::Bytes(self.take(n)?.to_vec()))
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    memo.insert(k, stack.last().cloned().ok_or_else(|| self.err("BINPUT on empty stack"))?);
                }
                b'r' => {
                    let k = self.u32()?;
                    memo.insert(k, stack.last().cloned().ok_or_else(|| self.err("LONG_BINPUT on empty stack"))?);
                }
                0x94 => {
                    let k = memo.len() as u32;
                    memo.insert(k, stack.last().cloned().ok_or_else(|| self.err("MEMOIZE on empty stack"))?);
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    stack.push(memo.get(&k).cloned().ok_or_else(|| self.err(format!("memo {k} unset")))?)
                }
                b'j' => {
                    let k = self.u32()?;
                    stack.push(memo.get(&k).cloned().ok_or_else(|| self.err(format!("memo {k} unset")))?)
                }
                b't' => {
                    let items = pop_mark(&mut stack, self)?;
                    stack.push(V::Tuple(items))
                }
                0x85 => {
                    let a = pop!();
                    stack.push(V::Tuple(vec![a]))
                }
                0x86 => {
                    let b = pop!();
                    let a = pop!();
                    stack.push(V::Tuple(vec![a, b]))
                }
                0x87 => {
                    let c = pop!();
                    let b = pop!();
                    let a = pop!();
                    stack.push(V::Tuple(vec![a, b, c]))
                }
                b'l' => {
                    let items = pop_mark(&mut stack, self)?;
                    stack.push(V::List(items))
                }
                b'd' => {
                    let items = pop_mark(&mut stack, self)?;
                    stack.push(V::Dict(items.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect()))
                }
                b'a' => {
                    let v = pop!();
                    match stack.last_mut() {
                        Some(V::List(l)) => l.push(v),
                        _ => return Err(self.err("APPEND to a non-list")),
                    }
                }
                b'e' => {
                    let items = pop_mark(&mut stack, self)?;
                    match stack.last_mut() {
                        Some(V::List(l)) => l.extend(items),
                        _ => return Err(self.err("APPENDS to a non-list")),
                    }
                }
                b's' => {
                    let v = pop!();
                    let k = pop!();
                    match stack.last_mut() {
                        Some(V::Dict(d)) => d.push((k, v)),
                        Some(V::Opaque(_)) => {}
                        _ => return Err(self.err("SETITEM on a non-dict")),
                    }
                }
                b'u' => {
                    let items = pop_mark(&mut stack, self)?;
                    match stack.last_mut() {
                        Some(V::Dict(d)) => d.extend(items.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone()))),
                        Some(V::Opaque(_)) => {}
                        _ => return Err(self.err("SETITEMS on a non-dict")),
                    }
                }
                b'c' => {
                    let m = self.line()?;
                    let n = self.line()?;
                    stack.push(V::Global(format!("{m}.{n}")))
                }
                0x93 => {
                    let n = pop!();
                    let m = pop!();
                    match (m, n) {
                        (V::Str(m), V::Str(n)) => stack.push(V::Global(format!("{m}.{n}"))),
                        _ => return Err(self.err("STACK_GLOBAL needs two strings")),
                    }
                }
                b'Q' => {
                    let pid = pop!();
                    let v = self.persistent(pid)?;
                    stack.push(v)
                }
                b'R' => {
                    let args = pop!();
                    let f = pop!();
                    let v = self.reduce(f, args)?;
                    stack.push(v)
                }
                0x81 => {
                    let _args = pop!();
                    let cls = pop!();
                    let name = match cls {
                        V::Global(g) => g,
                        _ => "object".into(),
                    };
                    stack.push(V::Opaque(name))
                }
                b'b' => {
                    // BUILD sets object state; for dicts (OrderedDict._metadata) and placeholders it is ignored.
                    let _state = pop!();
                    if stack.is_empty() {
                        return Err(self.err("BUILD on empty stack"));
                    }
                }
                0x8f => stack.push(V::List(vec![])),
                0x90 => {
                    let items = pop_mark(&mut stack, self)?;
                    if let Some(V::List(l)) = stack.last_mut() {
                        l.extend(items)
                    }
                }
                0x91 => {
                    let items = pop_mark(&mut stack, self)?;
                    stack.push(V::List(items))
                }
                _ => return Err(self.err(format!("pickle opcode 0x{op:02x} is outside the supported subset (no code is executed)"))),
            }
        }
    }

    fn persistent(&mut self, pid: V) -> Result<V> {
        let t = match pid {
            V::Tuple(t) => t,
            _ => return Err(self.err("persistent id is not a tuple")),
        };
        match t.as_slice() {
            [V::Str(kind), V::Global(cls), V::Str(key), _loc, V::Int(_n)] if kind == "storage" => {
                let dtype = storage_dtype(cls).ok_or_else(|| self.err(format!("storage type {cls} is not supported")))?;
                Ok(V::Storage { dtype, key: key.clone() })
            }
            _ => Err(self.err(format!("unsupported persistent id {t:?}"))),
        }
    }

    fn reduce(&mut self, f: V, args: V) -> Result<V> {
        let name = match f {
            V::Global(g) => g,
            other => return Err(self.err(format!("REDUCE on {other:?}"))),
        };
        let args = match args {
            V::Tuple(a) => a,
            _ => return Ok(V::Opaque(name)),
        };
        match name.as_str() {
            "collections.OrderedDict" | "builtins.dict" => Ok(V::Dict(vec![])),
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => self.rebuild(&args),
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => match args.into_iter().next() {
                Some(V::Tensor(t)) => Ok(V::Tensor(t)),
                _ => Err(self.err("_rebuild_parameter without a tensor")),
            },
            _ => Ok(V::Opaque(name)),
        }
    }

    fn rebuild(&mut self, a: &[V]) -> Result<V> {
        let ints = |v: &V| -> Option<Vec<usize>> {
            match v {
                V::Tuple(x) | V::List(x) => x.iter().map(|e| if let V::Int(i) = e { usize::try_from(*i).ok() } else { None }).collect(),
                _ => None,
            }
        };
        let (dtype, key) = match a.first() {
            Some(V::Storage { dtype, key }) => (*dtype, key.clone()),
            _ => return Err(self.err("tensor without a storage")),
        };
        let off = match a.get(1) {
            Some(V::Int(i)) if *i >= 0 => *i as usize,
            _ => return Err(self.err("bad storage offset")),
        };
        let shape = a.get(2).and_then(ints).ok_or_else(|| self.err("bad tensor size"))?;
        let stride = a.get(3).and_then(ints).ok_or_else(|| self.err("bad tensor stride"))?;
        if stride.len() != shape.len() {
            return Err(self.err("size and stride differ in length"));
        }
        if !self.cache.contains_key(&key) {
            let b = (self.storages)(&key)?;
            self.cache.insert(key.clone(), b);
        }
        let st = &self.cache[&key];
        let es = dtype.size();
        let n = crate::tensor::numel(&shape);
        let avail = st.len() / es;
        let mut data = Vec::with_capacity(n * es);
        if n > 0 {
            let max = off + shape.iter().zip(&stride).map(|(d, s)| (d - 1) * s).sum::<usize>();
            if max >= avail {
                return Err(self.err(format!("tensor reaches element {max} of storage {key} holding {avail}")));
            }
            let mut idx = vec![0usize; shape.len()];
            for _ in 0..n {
                let e = off + idx.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
                data.extend_from_slice(&st[e * es..(e + 1) * es]);
                for d in (0..shape.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
        }
        Ok(V::Tensor(Tensor { dtype, shape, data }))
    }
}

fn key_str(k: &V) -> Option<&str> {
    if let V::Str(s) = k {
        Some(s)
    } else {
        None
    }
}

/// All-tensor dicts qualify as a state dict; other entries (epoch, arch, optimizer…) are ignored.
fn state_dict(path: &Path, v: V) -> Result<Vec<(String, Tensor)>> {
    let d = match v {
        V::Dict(d) => d,
        V::Opaque(n) => return Err(Error::format(path, format!("the checkpoint pickles a whole {n} object, not a state dict; save model.state_dict() instead"))),
        other => return Err(Error::format(path, format!("top level is {}, not a dict", kind(&other)))),
    };
    for k in ["state_dict", "model_state_dict", "model", "net", "module"] {
        if let Some((_, inner)) = d.iter().find(|(kk, _)| key_str(kk) == Some(k)) {
            if matches!(inner, V::Dict(_) | V::Opaque(_)) {
                return state_dict(path, inner.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (k, v) in d {
        let k = key_str(&k).ok_or_else(|| Error::format(path, "state dict key is not a string"))?.to_string();
        match v {
            V::Tensor(t) => out.push((k, t)),
            V::Opaque(n) => return Err(Error::format(path, format!("tensor {k}: a pickled {n} is outside the supported subset"))),
            other => return Err(Error::format(path, format!("entry {k} is {}, not a tensor (no state_dict entry found)", kind(&other)))),
        }
    }
    if out.is_empty() {
        return Err(Error::format(path, "no tensors found"));
    }
    Ok(out)
}

fn kind(v: &V) -> &'static str {
    match v {
        V::None => "None",
        V::Bool(_) => "a bool",
        V::Int(_) => "an int",
        V::Float(_) => "a float",
        V::Str(_) => "a string",
        V::Bytes(_) => "bytes",
        V::List(_) => "a list",
        V::Tuple(_) => "a tuple",
        V::Dict(_) => "a dict",
        V::Global(_) => "a class",
        V::Storage { .. } => "a storage",
        V::Tensor(_) => "a tensor",
        V::Opaque(_) => "an object",
        V::Mark => "a mark",
    }
}

/// Reads a `torch.save` zip checkpoint (a plain state dict, or one nested under `state_dict`).
pub fn load_pth_bytes(path: &Path, bytes: &[u8]) -> Result<TensorMap> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| Error::format(path, format!("not a readable zip: {e}")))?;
    let names: Vec<String> = z.file_names().map(String::from).collect();
    let pkl = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .min_by_key(|n| n.len())
        .ok_or_else(|| Error::format(path, "zip without data.pkl: not a torch.save checkpoint"))?
        .clone();
    let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
    let mut read = |name: &str| -> Result<Option<Vec<u8>>> {
        let mut f = match z.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(Error::format(path, format!("{name}: {e}"))),
        };
        let mut b = Vec::new();
        f.read_to_end(&mut b).map_err(|e| Error::format(path, format!("{name}: {e}")))?;
        Ok(Some(b))
    };
    if let Some(bo) = read(&format!("{prefix}byteorder"))? {
        if bo.trim_ascii() != b"little" {
            return Err(Error::format(path, format!("byteorder {} is not supported", String::from_utf8_lossy(&bo))));
        }
    }
    let pickle = read(&pkl)?.unwrap();
    let cell = std::cell::RefCell::new(read);
    let storages = |key: &str| -> Result<Vec<u8>> {
        if key.contains('/') || key.contains("..") {
            return Err(Error::format(path, format!("bad storage key {key}")));
        }
        let name = format!("{prefix}data/{key}");
        (cell.borrow_mut())(&name)?.ok_or_else(|| Error::format(path, format!("storage {name} missing (truncated file?)")))
    };
    let mut u = Unpickler { path, data: &pickle, pos: 0, storages: &storages, cache: HashMap::new() };
    let v = u.run()?;
    let mut m = TensorMap::new();
    for (k, t) in state_dict(path, v)? {
        m.tensors.insert(k, t);
    }
    Ok(m)
}
