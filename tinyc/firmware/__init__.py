"""Firmware for the boards: a project (main, startup, linker scripts, Makefile) around the generated library, its
images (ELF, UF2, bin, hex) and emulated runs under QEMU with instruction counts."""
