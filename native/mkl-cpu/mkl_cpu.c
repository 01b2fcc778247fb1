/*
 * libflexgen_mkl_cpu.so: lets Intel MKL, which libtorch links into libtorch_cpu.so, use its fast kernels on AMD CPUs.
 *
 * MKL chooses its optimised code paths (AVX2, AVX-512) only on CPUs it calls Intel; on any other vendor it runs its
 * generic kernels whatever the CPU supports. It asks through mkl_serv_intel_cpu_true(), an exported symbol that
 * libtorch_cpu.so calls through its PLT, so a library preloaded ahead of it answers instead. Answering "yes" makes MKL
 * dispatch by the CPU's own feature flags, as it does on Intel. On this project's AMD EPYC (AVX-512) VM float32 prefill
 * and decode of OPT-125m ran about 30% faster. flexgen preloads it on AMD CPUs (see src/Host/Cli/MklCpuDispatch.cs).
 *
 * Build: ./build.sh (gcc); the built library is committed beside this file for machines without a compiler.
 */
int mkl_serv_intel_cpu_true(void) { return 1; }
