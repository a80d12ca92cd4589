//! The packaged model on a Cortex-M4F (QEMU's MPS2 AN386 board): classifies the digits in
//! `digits.bin` (784-byte images, read one at a time from the host over semihosting) with the
//! int8 weights in flash, and writes one line per digit to the host: the digit, then the ten
//! probabilities as the hexadecimal bits of their f32, so the host compares them exactly.
//! The last line is the stack's high-water mark in bytes. `cargo xtask embedded` builds it,
//! runs it and checks every line against the native model.
//!
//! Nothing here allocates: the allocator refuses every request, so a run that completes used
//! no heap.
#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::hio::{self, HostStream};
use cortex_m_semihosting::{nr, syscall};
use infer::PIXELS;

#[entry]
fn main() -> ! {
    paint_stack();
    let status = match run() {
        Ok(()) => EXIT_SUCCESS,
        Err(why) => {
            if let Ok(mut stderr) = hio::hstderr() {
                let _ = stderr.write_all(why.as_bytes());
            }
            EXIT_FAILURE
        }
    };
    debug::exit(status);
    // Reached only if a debugger lets the program go on after the exit.
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> Result<(), &'static str> {
    let mut out = hio::hstdout().map_err(|()| "no semihosting stdout\n")?;
    let model = infer::bundled::model();
    let digits = open(b"digits.bin\0").ok_or("cannot open digits.bin on the host\n")?;
    let mut image = [0u8; PIXELS];
    while read(digits, &mut image)? {
        let prediction = model.classify(&image);
        let mut line = [b' '; 2 + 9 * infer::NUM_CLASSES];
        line[0] = b'0' + prediction.digit as u8;
        for (field, p) in line[2..].chunks_exact_mut(9).zip(prediction.probabilities) {
            hex(p.to_bits(), &mut field[..8]);
        }
        *line.last_mut().unwrap() = b'\n';
        write(&mut out, &line)?;
    }
    let mut last = *b"stack 00000000\n";
    hex(stack_high_water() as u32, &mut last[6..14]);
    write(&mut out, &last)
}

/// Opens a host file for reading, in binary mode.
fn open(path: &[u8]) -> Option<usize> {
    // SAFETY: the path is NUL-terminated and outlives the call; its length excludes the NUL.
    let fd = unsafe { syscall!(OPEN, path.as_ptr(), nr::open::R_BINARY, path.len() - 1) };
    (fd as isize != -1).then_some(fd)
}

/// Fills `buffer` from the host file: false at its end, an error on a partial image.
fn read(fd: usize, buffer: &mut [u8]) -> Result<bool, &'static str> {
    // SAFETY: the host writes at most `buffer.len()` bytes into it; the call returns how many
    // it did not write.
    let missing = unsafe { syscall!(READ, fd, buffer.as_mut_ptr(), buffer.len()) };
    match missing {
        0 => Ok(true),
        n if n == buffer.len() => Ok(false),
        _ => Err("digits.bin does not hold whole 784-byte images\n"),
    }
}

fn write(out: &mut HostStream, bytes: &[u8]) -> Result<(), &'static str> {
    out.write_all(bytes).map_err(|()| "cannot write to the host\n")
}

/// `value` as eight lowercase hexadecimal digits.
fn hex(value: u32, out: &mut [u8]) {
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(value >> (28 - 4 * i)) as usize & 0xf];
    }
}

/// What the stack's unused words are painted with, to find later how deep it went.
const PAINT: u32 = 0x5A5A_A5A5;

unsafe extern "C" {
    /// The end of the statics (cortex-m-rt's linker script): the lowest address the stack may reach.
    static mut __sheap: u32;
    /// The top of RAM, where the stack starts.
    static _stack_start: u32;
}

/// Paints every word between the statics and the stack pointer, less a margin: this
/// function's own frame may be pushed below the stack pointer it reads.
#[inline(never)]
fn paint_stack() {
    let mut word = &raw mut __sheap;
    let below_this_frame = (cortex_m::register::msp::read() as *mut u32).wrapping_sub(64);
    while word < below_this_frame {
        // SAFETY: the words below the stack pointer and above the statics are used by nothing
        // yet, and nothing interrupts this loop.
        unsafe {
            ptr::write_volatile(word, PAINT);
            word = word.add(1);
        }
    }
}

/// Bytes of stack ever used: from the top down to the lowest word no longer painted.
fn stack_high_water() -> usize {
    let top = &raw const _stack_start as usize;
    let mut word = &raw const __sheap;
    // SAFETY: every word read lies between the statics and the top of RAM.
    while (word as usize) < top && unsafe { ptr::read_volatile(word) } == PAINT {
        word = unsafe { word.add(1) };
    }
    top - word as usize
}

/// The allocator of a firmware without a heap: `infer` links `alloc`, but nothing this
/// firmware runs allocates, and any allocation would stop the run with an error.
struct NoHeap;

// SAFETY: it never hands out memory.
unsafe impl GlobalAlloc for NoHeap {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        ptr::null_mut()
    }

    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static HEAP: NoHeap = NoHeap;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    if let Ok(mut stderr) = hio::hstderr() {
        let _ = stderr.write_all(b"firmware panicked\n");
    }
    debug::exit(EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
