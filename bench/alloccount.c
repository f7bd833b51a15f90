/* Counts CPython's allocator calls (bench/probe.py builds and loads it; measurement only).

install() wraps the raw, mem and object domains (PyMem_SetAllocator, as tracemalloc does): each
malloc, calloc and realloc adds one to its domain's counter and goes on to the allocator that
was there before; free is passed through uncounted. counts() returns (raw, mem, object). The
cost is one relaxed atomic add per allocation (the raw domain may be called without the GIL). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyMemAllocatorEx previous[3];
static unsigned long long counted[3];
static int installed;

#define DOMAIN(ctx) ((int)(intptr_t)(ctx))
#define COUNT(ctx) __atomic_fetch_add(&counted[DOMAIN(ctx)], 1, __ATOMIC_RELAXED)

static void *count_malloc(void *ctx, size_t size) {
    COUNT(ctx);
    PyMemAllocatorEx *p = &previous[DOMAIN(ctx)];
    return p->malloc(p->ctx, size);
}

static void *count_calloc(void *ctx, size_t nelem, size_t elsize) {
    COUNT(ctx);
    PyMemAllocatorEx *p = &previous[DOMAIN(ctx)];
    return p->calloc(p->ctx, nelem, elsize);
}

static void *count_realloc(void *ctx, void *ptr, size_t size) {
    COUNT(ctx);
    PyMemAllocatorEx *p = &previous[DOMAIN(ctx)];
    return p->realloc(p->ctx, ptr, size);
}

static void count_free(void *ctx, void *ptr) {
    PyMemAllocatorEx *p = &previous[DOMAIN(ctx)];
    p->free(p->ctx, ptr);
}

static PyObject *install(PyObject *self, PyObject *unused) {
    static const PyMemAllocatorDomain domains[3] = {
        PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    if (!installed) {
        for (int i = 0; i < 3; i++) {
            PyMemAllocatorEx wrapper = {(void *)(intptr_t)i, count_malloc, count_calloc,
                                        count_realloc, count_free};
            PyMem_GetAllocator(domains[i], &previous[i]);
            PyMem_SetAllocator(domains[i], &wrapper);
        }
        installed = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *counts(PyObject *self, PyObject *unused) {
    return Py_BuildValue("(KKK)", __atomic_load_n(&counted[0], __ATOMIC_RELAXED),
                         __atomic_load_n(&counted[1], __ATOMIC_RELAXED),
                         __atomic_load_n(&counted[2], __ATOMIC_RELAXED));
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, "Start counting allocator calls (once)."},
    {"counts", counts, METH_NOARGS, "(raw, mem, object) allocator calls since install()."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_alloccount", NULL, -1, methods};

PyMODINIT_FUNC PyInit__alloccount(void) { return PyModule_Create(&module); }
