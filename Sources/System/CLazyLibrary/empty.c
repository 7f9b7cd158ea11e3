/* lazy_library.h is this target: a header each lazily loaded library's loader.c includes. */
