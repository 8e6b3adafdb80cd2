"""The model's own share of a linked firmware image, from the ELF's symbol table: its functions (code) and its
constants (weights and tables), apart from startup, console and libc. `tinyc build` reports it; the benchmark
splits the code per kernel.

The model's local symbols are those after its C file's STT_FILE symbol (e.g. 'kws.c'), its global ones start with
`<prefix>_`. The library functions the model's object calls (libgcc's 64-bit multiply and soft-float on the M0+,
memset, libm's expf ...) are counted apart, as helpers: the rest of the firmware may share them, and what they
call in turn is not followed. Not counted: constants gcc emits without a symbol (switch tables; literal pools are
inside the functions' sizes)."""
from __future__ import annotations

from elftools.elf.elffile import ELFFile


def model_symbols(elf_path, source_name: str, prefix: str) -> dict:
    """{'functions': {name: bytes}, 'constants': {name: bytes}} of the model in a linked ELF. Constants are the
    model's data objects that occupy flash (read-only or initialized data); the arena (.bss) is not one."""
    functions, constants = {}, {}
    with open(elf_path, "rb") as fh:
        elf = ELFFile(fh)
        loaded = {i for i, sec in enumerate(elf.iter_sections())
                  if sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & 2}    # SHF_ALLOC, not NOBITS
        current = None
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            kind, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
            if kind == "STT_FILE":
                current = sym.name
                continue
            ours = (bind == "STB_LOCAL" and current == source_name) or \
                (bind != "STB_LOCAL" and sym.name.startswith(prefix + "_"))
            if not ours or not sym["st_size"]:
                continue
            if kind == "STT_FUNC":
                functions[sym.name] = functions.get(sym.name, 0) + sym["st_size"]
            elif kind == "STT_OBJECT" and sym["st_shndx"] in loaded:
                constants[sym.name] = constants.get(sym.name, 0) + sym["st_size"]
    return dict(functions=functions, constants=constants)


def called_helpers(obj_path, elf_path) -> dict:
    """{name: bytes in the linked ELF} of the functions the model's object file calls but does not define."""
    with open(obj_path, "rb") as fh:
        undefined = {sym.name for sym in ELFFile(fh).get_section_by_name(".symtab").iter_symbols()
                     if sym.name and sym["st_shndx"] == "SHN_UNDEF"}
    with open(elf_path, "rb") as fh:
        return {sym.name: sym["st_size"] for sym in ELFFile(fh).get_section_by_name(".symtab").iter_symbols()
                if sym.name in undefined and sym["st_info"]["type"] == "STT_FUNC"}


def model_flash(elf_path, prefix: str, obj_path=None) -> dict:
    """Bytes of flash the model's code and constants take in the image (`<prefix>.c` compiled into it), and, with
    the model's object file, the library helpers it calls."""
    s = model_symbols(elf_path, f"{prefix}.c", prefix)
    code, const = sum(s["functions"].values()), sum(s["constants"].values())
    r = dict(code_bytes=code, constant_bytes=const, flash_bytes=code + const)
    if obj_path is not None:
        helpers = called_helpers(obj_path, elf_path)
        r.update(helpers=dict(sorted(helpers.items())), helper_bytes=sum(helpers.values()))
    return r
