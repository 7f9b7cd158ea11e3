/* Written by scripts/c-forwarders: libgit2, loaded with dlopen when a process first calls
 * it (lazy_library.h, in CLazyLibrary). Do not edit; run the script again. */
#include "CGit2Shims.h"
#include <git2.h>

#define LAZY_NAME "libgit2"
#define LAZY_SONAME "libgit2.so." LIBGIT2_SOVERSION
#define LAZY_PACKAGE "libgit2-" LIBGIT2_SOVERSION
#define LAZY_PREFIX git
#define FUNCTIONS(FORWARD, FORWARD_VOID) \
    FORWARD_VOID(git_blob_free, (git_blob *blob), (blob)) \
    FORWARD(int, git_blob_lookup, (git_blob **blob, git_repository *repo, const git_oid *id), (blob, repo, id)) \
    FORWARD(const void *, git_blob_rawcontent, (const git_blob *blob), (blob)) \
    FORWARD(git_object_size_t, git_blob_rawsize, (const git_blob *blob), (blob)) \
    FORWARD_VOID(git_buf_dispose, (git_buf *buffer), (buffer)) \
    FORWARD(int, git_commit_extract_signature, (git_buf *signature, git_buf *signed_data, git_repository *repo, git_oid *commit_id, const char *field), (signature, signed_data, repo, commit_id, field)) \
    FORWARD_VOID(git_commit_free, (git_commit *commit), (commit)) \
    FORWARD(const git_oid *, git_commit_id, (const git_commit *commit), (commit)) \
    FORWARD(int, git_commit_lookup, (git_commit **commit, git_repository *repo, const git_oid *id), (commit, repo, id)) \
    FORWARD(const char *, git_commit_summary, (git_commit *commit), (commit)) \
    FORWARD(git_time_t, git_commit_time, (const git_commit *commit), (commit)) \
    FORWARD(int, git_commit_tree, (git_tree **tree_out, const git_commit *commit), (tree_out, commit)) \
    FORWARD_VOID(git_config_free, (git_config *cfg), (cfg)) \
    FORWARD(int, git_config_get_multivar_foreach, (const git_config *cfg, const char *name, const char *regexp, git_config_foreach_cb callback, void *payload), (cfg, name, regexp, callback, payload)) \
    FORWARD(int, git_config_open_ondisk, (git_config **out, const char *path), (out, path)) \
    FORWARD(int, git_credential_ssh_key_new, (git_credential **out, const char *username, const char *publickey, const char *privatekey, const char *passphrase), (out, username, publickey, privatekey, passphrase)) \
    FORWARD(int, git_credential_username_new, (git_credential **out, const char *username), (out, username)) \
    FORWARD(int, git_credential_userpass_plaintext_new, (git_credential **out, const char *username, const char *password), (out, username, password)) \
    FORWARD_VOID(git_error_clear, (void), ()) \
    FORWARD(const git_error *, git_error_last, (void), ()) \
    FORWARD(int, git_fetch_options_init, (git_fetch_options *opts, unsigned int version), (opts, version)) \
    FORWARD(int, git_graph_descendant_of, (git_repository *repo, const git_oid *commit, const git_oid *ancestor), (repo, commit, ancestor)) \
    FORWARD(size_t, git_index_entrycount, (const git_index *index), (index)) \
    FORWARD_VOID(git_index_free, (git_index *index), (index)) \
    FORWARD(const git_index_entry *, git_index_get_byindex, (git_index *index, size_t n), (index, n)) \
    FORWARD(int, git_indexer_append, (git_indexer *idx, const void *data, size_t size, git_indexer_progress *stats), (idx, data, size, stats)) \
    FORWARD(int, git_indexer_commit, (git_indexer *idx, git_indexer_progress *stats), (idx, stats)) \
    FORWARD_VOID(git_indexer_free, (git_indexer *idx), (idx)) \
    FORWARD(const char *, git_indexer_name, (const git_indexer *idx), (idx)) \
    FORWARD(int, git_indexer_new, (git_indexer **out, const char *path, unsigned int mode, git_odb *odb, git_indexer_options *opts), (out, path, mode, odb, opts)) \
    FORWARD(int, git_indexer_options_init, (git_indexer_options *opts, unsigned int version), (opts, version)) \
    FORWARD(int, git_libgit2_init, (void), ()) \
    FORWARD(int, git_libgit2_version, (int *major, int *minor, int *rev), (major, minor, rev)) \
    FORWARD_VOID(git_object_free, (git_object *object), (object)) \
    FORWARD(int, git_object_peel, (git_object **peeled, const git_object *object, git_object_t target_type), (peeled, object, target_type)) \
    FORWARD_VOID(git_odb_free, (git_odb *db), (db)) \
    FORWARD(int, git_odb_read_header, (size_t *len_out, git_object_t *type_out, git_odb *db, const git_oid *id), (len_out, type_out, db, id)) \
    FORWARD(int, git_odb_refresh, (struct git_odb *db), (db)) \
    FORWARD(int, git_oid_fromstr, (git_oid *out, const char *str), (out, str)) \
    FORWARD(char *, git_oid_tostr, (char *out, size_t n, const git_oid *id), (out, n, id)) \
    FORWARD_VOID(git_packbuilder_free, (git_packbuilder *pb), (pb)) \
    FORWARD(int, git_packbuilder_insert_walk, (git_packbuilder *pb, git_revwalk *walk), (pb, walk)) \
    FORWARD(int, git_packbuilder_new, (git_packbuilder **out, git_repository *repo), (out, repo)) \
    FORWARD(int, git_packbuilder_write_buf, (git_buf *buf, git_packbuilder *pb), (buf, pb)) \
    FORWARD(int, git_reference_create, (git_reference **out, git_repository *repo, const char *name, const git_oid *id, int force, const char *log_message), (out, repo, name, id, force, log_message)) \
    FORWARD(int, git_reference_dwim, (git_reference **out, git_repository *repo, const char *shorthand), (out, repo, shorthand)) \
    FORWARD_VOID(git_reference_free, (git_reference *ref), (ref)) \
    FORWARD_VOID(git_reference_iterator_free, (git_reference_iterator *iter), (iter)) \
    FORWARD(int, git_reference_iterator_new, (git_reference_iterator **out, git_repository *repo), (out, repo)) \
    FORWARD(const char *, git_reference_name, (const git_reference *ref), (ref)) \
    FORWARD(int, git_reference_next, (git_reference **out, git_reference_iterator *iter), (out, iter)) \
    FORWARD(int, git_reference_peel, (git_object **out, const git_reference *ref, git_object_t type), (out, ref, type)) \
    FORWARD(const git_oid *, git_reference_target, (const git_reference *ref), (ref)) \
    FORWARD(int, git_remote_connect, (git_remote *remote, git_direction direction, const git_remote_callbacks *callbacks, const git_proxy_options *proxy_opts, const git_strarray *custom_headers), (remote, direction, callbacks, proxy_opts, custom_headers)) \
    FORWARD(int, git_remote_create_anonymous, (git_remote **out, git_repository *repo, const char *url), (out, repo, url)) \
    FORWARD(int, git_remote_create_detached, (git_remote **out, const char *url), (out, url)) \
    FORWARD(int, git_remote_default_branch, (git_buf *out, git_remote *remote), (out, remote)) \
    FORWARD(int, git_remote_disconnect, (git_remote *remote), (remote)) \
    FORWARD(int, git_remote_fetch, (git_remote *remote, const git_strarray *refspecs, const git_fetch_options *opts, const char *reflog_message), (remote, refspecs, opts, reflog_message)) \
    FORWARD_VOID(git_remote_free, (git_remote *remote), (remote)) \
    FORWARD(int, git_remote_init_callbacks, (git_remote_callbacks *opts, unsigned int version), (opts, version)) \
    FORWARD(int, git_remote_ls, (const git_remote_head ***out, size_t *size, git_remote *remote), (out, size, remote)) \
    FORWARD_VOID(git_repository_free, (git_repository *repo), (repo)) \
    FORWARD(int, git_repository_head, (git_reference **out, git_repository *repo), (out, repo)) \
    FORWARD(int, git_repository_head_unborn, (git_repository *repo), (repo)) \
    FORWARD(int, git_repository_index, (git_index **out, git_repository *repo), (out, repo)) \
    FORWARD(int, git_repository_init, (git_repository **out, const char *path, unsigned is_bare), (out, path, is_bare)) \
    FORWARD(int, git_repository_init_ext, (git_repository **out, const char *repo_path, git_repository_init_options *opts), (out, repo_path, opts)) \
    FORWARD(int, git_repository_init_options_init, (git_repository_init_options *opts, unsigned int version), (opts, version)) \
    FORWARD(int, git_repository_odb, (git_odb **out, git_repository *repo), (out, repo)) \
    FORWARD(int, git_repository_open_bare, (git_repository **out, const char *bare_path), (out, bare_path)) \
    FORWARD(int, git_repository_open_ext, (git_repository **out, const char *path, unsigned int flags, const char *ceiling_dirs), (out, path, flags, ceiling_dirs)) \
    FORWARD(const char *, git_repository_path, (const git_repository *repo), (repo)) \
    FORWARD(int, git_repository_set_head, (git_repository *repo, const char *refname), (repo, refname)) \
    FORWARD(const char *, git_repository_workdir, (const git_repository *repo), (repo)) \
    FORWARD(int, git_revparse_single, (git_object **out, git_repository *repo, const char *spec), (out, repo, spec)) \
    FORWARD_VOID(git_revwalk_free, (git_revwalk *walk), (walk)) \
    FORWARD(int, git_revwalk_hide, (git_revwalk *walk, const git_oid *commit_id), (walk, commit_id)) \
    FORWARD(int, git_revwalk_new, (git_revwalk **out, git_repository *repo), (out, repo)) \
    FORWARD(int, git_revwalk_next, (git_oid *out, git_revwalk *walk), (out, walk)) \
    FORWARD(int, git_revwalk_push, (git_revwalk *walk, const git_oid *id), (walk, id)) \
    FORWARD_VOID(git_strarray_dispose, (git_strarray *array), (array)) \
    FORWARD(int, git_tag_list_match, (git_strarray *tag_names, const char *pattern, git_repository *repo), (tag_names, pattern, repo)) \
    FORWARD(const git_tree_entry *, git_tree_entry_byindex, (const git_tree *tree, size_t idx), (tree, idx)) \
    FORWARD(int, git_tree_entry_bypath, (git_tree_entry **out, const git_tree *root, const char *path), (out, root, path)) \
    FORWARD(git_filemode_t, git_tree_entry_filemode, (const git_tree_entry *entry), (entry)) \
    FORWARD_VOID(git_tree_entry_free, (git_tree_entry *entry), (entry)) \
    FORWARD(const git_oid *, git_tree_entry_id, (const git_tree_entry *entry), (entry)) \
    FORWARD(const char *, git_tree_entry_name, (const git_tree_entry *entry), (entry)) \
    FORWARD(git_object_t, git_tree_entry_type, (const git_tree_entry *entry), (entry)) \
    FORWARD(size_t, git_tree_entrycount, (const git_tree *tree), (tree)) \
    FORWARD_VOID(git_tree_free, (git_tree *tree), (tree)) \
    FORWARD(int, git_tree_lookup, (git_tree **out, git_repository *repo, const git_oid *id), (out, repo, id))

#include <lazy_library.h>
