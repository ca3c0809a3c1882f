#!/bin/bash
# dracut module of vfio-flavourd: the same as the initramfs-tools hook
# (/usr/share/initramfs-tools/hooks/vfio-flavourd): the policy compiled for
# the kernel of the image ($kernel) into native udev rules, and the modules
# those rules load, so that no host driver in the image binds a policy
# device.  With nothing to claim it adds nothing.

_vfio_flavourd_rules() {
    # Compiled once per image, into dracut's scratch directory.
    local rules="$DRACUT_TMPDIR/vfio-flavourd.rules"
    if [[ ! -e $rules ]]; then
        if ! /usr/sbin/vfio-flavourd --kernel-release "$kernel" generate-rules --initramfs \
                --output "$rules"; then
            dwarn "vfio-flavourd: the policy did not compile; this image claims no device"
            : > "$rules"
        fi
    fi
    printf '%s\n' "$rules"
}

_vfio_flavourd_modules() {
    sed -n 's/^# modules: //p' "$(_vfio_flavourd_rules)"
}

check() {
    require_binaries /usr/sbin/vfio-flavourd || return 1
    return 0
}

depends() {
    echo udev-rules
    return 0
}

installkernel() {
    local modules
    modules=$(_vfio_flavourd_modules)
    [[ -n $modules ]] || return 0
    # shellcheck disable=SC2086
    hostonly='' instmods $modules vfio vfio_iommu_type1 virtio_iommu
}

install() {
    local rules record="${VFIO_FLAVOURD_ROOT:-}/var/lib/vfio-flavourd/initramfs"
    rules=$(_vfio_flavourd_rules)
    if [[ -s $rules ]]; then
        mkdir -p "$record" && cp "$rules" "$record/$kernel.rules"
    fi
    [[ -n $(_vfio_flavourd_modules) ]] || return 0
    inst_simple "$rules" "$udevrulesdir/70-vfio-flavourd.rules"
}
