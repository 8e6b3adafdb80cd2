"""Turning names from a model into safe C: identifiers and comment text.

Names from a model never reach C source unsanitized. Identifiers are built from our own prefixes and indices;
model names appear only in comments, after `comment_text` has made them harmless.
"""
import re

C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline int long
register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
_Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local
bool true false main NULL asm typeof
""".split())

_MAX_IDENT = 40


def c_identifier(name: str, fallback: str = "model") -> str:
    """A valid, lower-case C identifier derived from `name` (for prefixes like the model name)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name or "").strip("_").lower()
    ident = re.sub(r"_+", "_", ident)[:_MAX_IDENT].strip("_")
    if not ident:
        ident = fallback
    if ident[0].isdigit():
        ident = "m_" + ident
    if ident in C_KEYWORDS or ident.startswith("__"):
        ident = ident + "_m"
    return ident


def comment_text(name: str, limit: int = 60) -> str:
    """`name` made safe to put inside a /* */ comment: printable ASCII, no comment terminators, one line."""
    text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(name))
    text = text.replace("*/", "*_/").replace("/*", "/_*").replace("\\", "/")
    while "??" in text:  # trigraphs (-std=c99 honours them)
        text = text.replace("??", "?_?")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def tail_text(text: str, n: int) -> str:
    """The end of a long name in at most n characters: tensor and layer names of one model share long prefixes
    (TFLite's), their ends tell them apart."""
    return text if len(text) <= n else "\u2026" + text[-(n - 1):]
