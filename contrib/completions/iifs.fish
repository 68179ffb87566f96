complete -c iifs -s o -d 'Settings and mount options, comma-separated: state_dir=, config=, chunk_size=, durability=, threads=, allow_other, log_level=, space_warning=, volume_dirs=DIR:DIR, passthrough=on|off' -r
complete -c iifs -l state-dir -d 'Where the set registry is kept [default: /var/lib/iifs as root]' -r -f -a "(__fish_complete_directories)"
complete -c iifs -l config -d 'A YAML settings file (read after /etc/iifs/iifs.yaml)' -r -F
complete -c iifs -l chunk-size -d 'Default chunk size for new sets (4K..1M, power of two) [default: 64K]' -r
complete -c iifs -l durability -d 'Default durability for new sets [default: strict]' -r -f -a "strict\t''
relaxed\t''"
complete -c iifs -l threads -d 'FUSE threads [default: 2]' -r
complete -c iifs -l log-level -d 'Log level [default: info]' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c iifs -s f -l foreground -d 'Stay in the foreground and log to stderr'
complete -c iifs -l allow-other -d 'Let users other than the mounting one use the tree'
complete -c iifs -s h -l help -d 'Print help (see more with \'--help\')'
complete -c iifs -s V -l version -d 'Print version'
