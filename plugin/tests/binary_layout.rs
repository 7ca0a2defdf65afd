//! The plugin executable is linked for a fast start (plugin/build.rs): a
//! fixed-address executable, so the loader applies no relative relocations
//! to it on each of the runtime's per-pod starts.

/// `e_type` of an ELF file (little-endian x86-64/aarch64 layout).
fn elf_type(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 18 || &bytes[..4] != b"\x7fELF" || bytes[5] != 1 {
        return None;
    }
    Some(u16::from_le_bytes([bytes[16], bytes[17]]))
}

#[test]
fn the_plugin_is_a_fixed_address_executable() {
    const ET_EXEC: u16 = 2;
    let path = env!("CARGO_BIN_EXE_istio-cni");
    let mut header = [0u8; 18];
    std::io::Read::read_exact(&mut std::fs::File::open(path).expect("the plugin binary"), &mut header)
        .expect("an ELF header");
    let kind = elf_type(&header).expect("a little-endian ELF file");
    assert_eq!(
        kind, ET_EXEC,
        "{path}: ELF type {kind} (3 is a position-independent executable)"
    );
}
