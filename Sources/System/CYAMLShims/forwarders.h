/* Written by scripts/c-forwarders: the libyaml functions Tether calls, with their
 * prototypes and argument names. Do not edit; run the script again. */
FORWARD_VOID(yaml_event_delete, (yaml_event_t *event), (event))
FORWARD_VOID(yaml_parser_delete, (yaml_parser_t *parser), (parser))
FORWARD(int, yaml_parser_initialize, (yaml_parser_t *parser), (parser))
FORWARD(int, yaml_parser_parse, (yaml_parser_t *parser, yaml_event_t *event), (parser, event))
FORWARD(int, yaml_parser_scan, (yaml_parser_t *parser, yaml_token_t *token), (parser, token))
FORWARD_VOID(yaml_parser_set_input_string, (yaml_parser_t *parser, const unsigned char *input, size_t size), (parser, input, size))
FORWARD_VOID(yaml_token_delete, (yaml_token_t *token), (token))
