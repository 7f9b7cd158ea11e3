/* Written by scripts/c-forwarders: libyaml, loaded with dlopen when a process first calls
 * it (lazy_library.h, in CLazyLibrary). Do not edit; run the script again. */
#include "CYAMLShims.h"
#include <yaml.h>

#define LAZY_NAME "libyaml"
#define LAZY_SONAME "libyaml-0.so.2"
#define LAZY_PACKAGE "libyaml-0-2"
#define LAZY_PREFIX yaml
#define FUNCTIONS(FORWARD, FORWARD_VOID) \
    FORWARD_VOID(yaml_event_delete, (yaml_event_t *event), (event)) \
    FORWARD_VOID(yaml_parser_delete, (yaml_parser_t *parser), (parser)) \
    FORWARD(int, yaml_parser_initialize, (yaml_parser_t *parser), (parser)) \
    FORWARD(int, yaml_parser_parse, (yaml_parser_t *parser, yaml_event_t *event), (parser, event)) \
    FORWARD(int, yaml_parser_scan, (yaml_parser_t *parser, yaml_token_t *token), (parser, token)) \
    FORWARD_VOID(yaml_parser_set_input_string, (yaml_parser_t *parser, const unsigned char *input, size_t size), (parser, input, size)) \
    FORWARD_VOID(yaml_token_delete, (yaml_token_t *token), (token))

#include <lazy_library.h>
