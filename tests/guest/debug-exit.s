/* debug-exit CODE: write the byte CODE (0..255, decimal) to I/O port 0x501,
 * QEMU's `-device isa-debug-exit,iobase=0x501,iosize=1`, which makes QEMU
 * exit with status (CODE << 1) | 1. Part of the Linux stand-in for a Nanos
 * kernel (tests/guest/init): the Debian cloud kernel has no /dev/port
 * (CONFIG_DEVPORT is not set), so the guest's init needs its own `outb`.
 * Without that device in QEMU the write goes nowhere and this exits 0, and
 * init falls back to powering off. Exit status 1: bad argument or ioperm
 * refused. No libc: x86-64 Linux system calls only (assembled by build-initramfs.sh: as --64, ld -static -nostdlib).
 */
	.globl _start
	.text
_start:
	cmpq	$2, (%rsp)		/* argc == 2 */
	jne	fail
	movq	16(%rsp), %rsi		/* argv[1] */
	xorl	%eax, %eax
	xorl	%ecx, %ecx		/* digits seen */
digit:
	movzbl	(%rsi), %edx
	testl	%edx, %edx
	jz	parsed
	subl	$48, %edx		/* '0' */
	cmpl	$9, %edx
	ja	fail
	imull	$10, %eax, %eax
	addl	%edx, %eax
	cmpl	$255, %eax
	ja	fail
	incq	%rsi
	incl	%ecx
	jmp	digit
parsed:
	testl	%ecx, %ecx
	jz	fail
	movl	%eax, %ebx		/* the code */
	movl	$173, %eax		/* ioperm(0x501, 1, 1) */
	movl	$0x501, %edi
	movl	$1, %esi
	movl	$1, %edx
	syscall
	testq	%rax, %rax
	jnz	fail
	movl	%ebx, %eax
	movw	$0x501, %dx
	outb	%al, %dx		/* QEMU exits here when the device exists */
	xorl	%edi, %edi
	jmp	exit
fail:
	movl	$1, %edi
exit:
	movl	$60, %eax		/* exit(edi) */
	syscall
