/// A small classifier.
///
/// Input per sample: `[784]`; output per sample: `[10]`.
pub struct Mlp<T: ::kiln::__private::Float = ::core::primitive::f32> {
    state: ::kiln::__private::ModelState<T>,
}
const _: () = {
    #[automatically_derived]
    impl<T: ::kiln::__private::Float> Mlp<T> {
        /// Number of parameters.
        pub const PARAM_COUNT: usize = 101770;
        /// Forward floating-point operations per sample (a multiply-add counts 2).
        pub const FLOPS_PER_SAMPLE: u64 = 203658;
        /// A new model with PyTorch's default initialisation, drawn from `seed`.
        pub fn new(seed: u64) -> Self {
            <Self as ::kiln::__private::Model<T>>::with_seed(seed)
        }
    }
    #[automatically_derived]
    impl<T: ::kiln::__private::Float> ::core::clone::Clone for Mlp<T> {
        fn clone(&self) -> Self {
            Self {
                state: ::core::clone::Clone::clone(&self.state),
            }
        }
    }
    #[automatically_derived]
    impl<T: ::kiln::__private::Float> ::kiln::__private::Model<T> for Mlp<T> {
        type Input = ::kiln::__private::Shape1<784>;
        type Output = ::kiln::__private::Shape1<10>;
        const SPEC: &'static ::kiln::__private::ModelSpec = &::kiln::__private::ModelSpec {
            name: "Mlp",
            input: &[784],
            output: &[10],
            layers: &[
                ::kiln::__private::LayerInfo {
                    name: "fc1",
                    kind: "Dense(128)",
                    output: &[128],
                    params: 100480,
                    flops: 200832,
                    depth: 0,
                },
                ::kiln::__private::LayerInfo {
                    name: "relu_0",
                    kind: "Relu",
                    output: &[128],
                    params: 0,
                    flops: 128,
                    depth: 0,
                },
                ::kiln::__private::LayerInfo {
                    name: "dropout_0",
                    kind: "Dropout(0.2)",
                    output: &[128],
                    params: 0,
                    flops: 128,
                    depth: 0,
                },
                ::kiln::__private::LayerInfo {
                    name: "fc2",
                    kind: "Dense(10)",
                    output: &[10],
                    params: 1290,
                    flops: 2570,
                    depth: 0,
                },
            ],
            params: &[
                ::kiln::__private::ParamInfo {
                    name: "fc1.weight",
                    scope: "",
                    shape: &[128, 784],
                    offset: 0,
                    len: 100352,
                    init: ::kiln::__private::Init::FanInUniform {
                        fan_in: 784,
                    },
                    regularized: true,
                    kind: ::kiln::__private::TensorKind::Float,
                },
                ::kiln::__private::ParamInfo {
                    name: "fc1.bias",
                    scope: "",
                    shape: &[128],
                    offset: 100352,
                    len: 128,
                    init: ::kiln::__private::Init::FanInUniform {
                        fan_in: 784,
                    },
                    regularized: false,
                    kind: ::kiln::__private::TensorKind::Float,
                },
                ::kiln::__private::ParamInfo {
                    name: "fc2.weight",
                    scope: "",
                    shape: &[10, 128],
                    offset: 100480,
                    len: 1280,
                    init: ::kiln::__private::Init::FanInUniform {
                        fan_in: 128,
                    },
                    regularized: true,
                    kind: ::kiln::__private::TensorKind::Float,
                },
                ::kiln::__private::ParamInfo {
                    name: "fc2.bias",
                    scope: "",
                    shape: &[10],
                    offset: 101760,
                    len: 10,
                    init: ::kiln::__private::Init::FanInUniform {
                        fan_in: 128,
                    },
                    regularized: false,
                    kind: ::kiln::__private::TensorKind::Float,
                },
            ],
            param_count: 101770,
            buffers: &[],
            buffer_count: 0,
            fixed: 0,
            flops_per_sample: 203658,
            nodes: &[0, 784, 912, 1040, 1168, 1178],
            output_node: 4,
            token_vocab: ::core::option::Option::None,
            token_columns: &[],
            deferred: &[
                ::kiln::__private::DeferredWeight {
                    weight_offset: 0,
                    weight_len: 100352,
                    input: 0,
                    output: 1,
                    in_features: 784,
                    activation: ::kiln::__private::layers::Activation::Relu,
                },
                ::kiln::__private::DeferredWeight {
                    weight_offset: 100480,
                    weight_len: 1280,
                    input: 2,
                    output: 4,
                    in_features: 128,
                    activation: ::kiln::__private::layers::Activation::Identity,
                },
            ],
            dense_chain: false,
            input_ports: &[],
            output_ports: &[],
            onnx: ::kiln::__private::onnx::OnnxPlan::Graph(
                &[
                    ::kiln::__private::onnx::OnnxNode {
                        op: "Reshape",
                        inputs: &[
                            ::kiln::__private::onnx::OnnxValue::Node(0),
                            ::kiln::__private::onnx::OnnxValue::Ints(&[-1i64, 784i64]),
                        ],
                        output: ::kiln::__private::onnx::OnnxValue::Temp(1, 0u8),
                        attrs: &[],
                    },
                    ::kiln::__private::onnx::OnnxNode {
                        op: "Gemm",
                        inputs: &[
                            ::kiln::__private::onnx::OnnxValue::Temp(1, 0u8),
                            ::kiln::__private::onnx::OnnxValue::Param(0),
                            ::kiln::__private::onnx::OnnxValue::Param(100352),
                        ],
                        output: ::kiln::__private::onnx::OnnxValue::Temp(1, 1u8),
                        attrs: &[
                            ("transB", ::kiln::__private::onnx::OnnxAttr::Int(1i64)),
                        ],
                    },
                    ::kiln::__private::onnx::OnnxNode {
                        op: "Relu",
                        inputs: &[::kiln::__private::onnx::OnnxValue::Temp(1, 1u8)],
                        output: ::kiln::__private::onnx::OnnxValue::Node(1),
                        attrs: &[],
                    },
                    ::kiln::__private::onnx::OnnxNode {
                        op: "Identity",
                        inputs: &[::kiln::__private::onnx::OnnxValue::Node(1)],
                        output: ::kiln::__private::onnx::OnnxValue::Node(2),
                        attrs: &[],
                    },
                    ::kiln::__private::onnx::OnnxNode {
                        op: "Reshape",
                        inputs: &[
                            ::kiln::__private::onnx::OnnxValue::Node(2),
                            ::kiln::__private::onnx::OnnxValue::Ints(&[-1i64, 128i64]),
                        ],
                        output: ::kiln::__private::onnx::OnnxValue::Temp(4, 0u8),
                        attrs: &[],
                    },
                    ::kiln::__private::onnx::OnnxNode {
                        op: "Gemm",
                        inputs: &[
                            ::kiln::__private::onnx::OnnxValue::Temp(4, 0u8),
                            ::kiln::__private::onnx::OnnxValue::Param(100480),
                            ::kiln::__private::onnx::OnnxValue::Param(101760),
                        ],
                        output: ::kiln::__private::onnx::OnnxValue::Node(4),
                        attrs: &[
                            ("transB", ::kiln::__private::onnx::OnnxAttr::Int(1i64)),
                        ],
                    },
                ],
            ),
        };
        fn state(
            &self,
            _: ::kiln::__private::Sealed,
        ) -> &::kiln::__private::ModelState<T> {
            &self.state
        }
        fn state_mut(
            &mut self,
            _: ::kiln::__private::Sealed,
        ) -> &mut ::kiln::__private::ModelState<T> {
            &mut self.state
        }
        fn from_state(
            state: ::kiln::__private::ModelState<T>,
            _: ::kiln::__private::Sealed,
        ) -> Self {
            Self { state }
        }
        fn forward_pass(
            params: &[T],
            _buffers: &mut [T],
            ws: &mut ::kiln::__private::Pass<'_, T>,
            mut mode: ::kiln::__private::Mode<'_>,
            _: ::kiln::__private::Sealed,
        ) {
            let batch = ws.batch();
            {
                let io = ws.forward_io(0, 1, ::core::option::Option::None);
                ::kiln::__private::layers::dense_forward::<
                    T,
                    784,
                    128,
                >(
                    io.output,
                    io.input,
                    &params[0..100352],
                    ::core::option::Option::Some(&params[100352..100480]),
                    ::kiln::__private::layers::Activation::Relu,
                    batch,
                );
            }
            {
                let shard = ws.shard();
                let io = ws.forward_io(1, 2, ::core::option::Option::Some(3));
                ::kiln::__private::layers::dropout_forward_shard(
                    io.output,
                    io.aux,
                    io.input,
                    0.2f64,
                    mode.rng(),
                    shard,
                );
            }
            {
                let io = ws.forward_io(2, 4, ::core::option::Option::None);
                ::kiln::__private::layers::dense_forward::<
                    T,
                    128,
                    10,
                >(
                    io.output,
                    io.input,
                    &params[100480..101760],
                    ::core::option::Option::Some(&params[101760..101770]),
                    ::kiln::__private::layers::Activation::Identity,
                    batch,
                );
            }
        }
        fn backward_pass(
            params: &mut [T],
            grads: &mut [T],
            ws: &mut ::kiln::__private::Pass<'_, T>,
            update: ::core::option::Option<T>,
            to_input: bool,
            _: ::kiln::__private::Sealed,
        ) {
            let batch = ws.batch();
            if ws.reaches(101770) {
                {
                    let deferring = ws.deferring();
                    let noting = ws.noting();
                    let io = ws.backward_io(2, 4, ::core::option::Option::None);
                    if let ::core::option::Option::Some(rate) = update {
                        let (weight, bias) = params[100480..101770].split_at_mut(1280);
                        ::kiln::__private::layers::dense_backward_update::<
                            T,
                            128,
                            10,
                        >(
                            ::core::option::Option::Some((
                                io.grad_input,
                                ::kiln::__private::layers::Accum::Replace,
                            )),
                            weight,
                            ::core::option::Option::Some(bias),
                            rate,
                            io.input,
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Identity,
                            batch,
                        );
                    } else if deferring {
                        let maxima = ::kiln::__private::layers::dense_backward_deferred::<
                            T,
                            128,
                            10,
                        >(
                            ::core::option::Option::Some((
                                io.grad_input,
                                ::kiln::__private::layers::Accum::Replace,
                            )),
                            ::core::option::Option::Some(&mut grads[101760..101770]),
                            io.input,
                            &params[100480..101760],
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Identity,
                            batch,
                        );
                        ws.note(4, maxima);
                    } else if noting {
                        let (grad_weight, grad_bias) = grads[100480..101770]
                            .split_at_mut(1280);
                        let maxima = ::kiln::__private::layers::dense_backward_noting::<
                            T,
                            128,
                            10,
                        >(
                            ::core::option::Option::Some((
                                io.grad_input,
                                ::kiln::__private::layers::Accum::Replace,
                            )),
                            grad_weight,
                            ::core::option::Option::Some(grad_bias),
                            io.input,
                            &params[100480..101760],
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Identity,
                            batch,
                        );
                        ws.note(4, maxima);
                    } else {
                        let (grad_weight, grad_bias) = grads[100480..101770]
                            .split_at_mut(1280);
                        ::kiln::__private::layers::dense_backward::<
                            T,
                            128,
                            10,
                        >(
                            ::core::option::Option::Some((
                                io.grad_input,
                                ::kiln::__private::layers::Accum::Replace,
                            )),
                            grad_weight,
                            ::core::option::Option::Some(grad_bias),
                            io.input,
                            &params[100480..101760],
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Identity,
                            batch,
                        );
                    }
                }
            }
            if ws.reaches(100480) {
                {
                    let io = ws.backward_io(1, 2, ::core::option::Option::Some(3));
                    ::kiln::__private::layers::dropout_backward(
                        io.grad_input,
                        ::kiln::__private::layers::Accum::Replace,
                        io.aux,
                        io.grad_output,
                    );
                }
            }
            if ws.reaches(100480) {
                {
                    let deferring = ws.deferring();
                    let noting = ws.noting();
                    let io = ws.backward_io(0, 1, ::core::option::Option::None);
                    if let ::core::option::Option::Some(rate) = update {
                        let (weight, bias) = params[0..100480].split_at_mut(100352);
                        ::kiln::__private::layers::dense_backward_update::<
                            T,
                            784,
                            128,
                        >(
                            if to_input {
                                ::core::option::Option::Some((
                                    io.grad_input,
                                    ::kiln::__private::layers::Accum::Replace,
                                ))
                            } else {
                                ::core::option::Option::None
                            },
                            weight,
                            ::core::option::Option::Some(bias),
                            rate,
                            io.input,
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Relu,
                            batch,
                        );
                    } else if deferring {
                        let maxima = ::kiln::__private::layers::dense_backward_deferred::<
                            T,
                            784,
                            128,
                        >(
                            if to_input {
                                ::core::option::Option::Some((
                                    io.grad_input,
                                    ::kiln::__private::layers::Accum::Replace,
                                ))
                            } else {
                                ::core::option::Option::None
                            },
                            ::core::option::Option::Some(&mut grads[100352..100480]),
                            io.input,
                            &params[0..100352],
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Relu,
                            batch,
                        );
                        ws.note(1, maxima);
                    } else if noting {
                        let (grad_weight, grad_bias) = grads[0..100480]
                            .split_at_mut(100352);
                        let maxima = ::kiln::__private::layers::dense_backward_noting::<
                            T,
                            784,
                            128,
                        >(
                            if to_input {
                                ::core::option::Option::Some((
                                    io.grad_input,
                                    ::kiln::__private::layers::Accum::Replace,
                                ))
                            } else {
                                ::core::option::Option::None
                            },
                            grad_weight,
                            ::core::option::Option::Some(grad_bias),
                            io.input,
                            &params[0..100352],
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Relu,
                            batch,
                        );
                        ws.note(1, maxima);
                    } else {
                        let (grad_weight, grad_bias) = grads[0..100480]
                            .split_at_mut(100352);
                        ::kiln::__private::layers::dense_backward::<
                            T,
                            784,
                            128,
                        >(
                            if to_input {
                                ::core::option::Option::Some((
                                    io.grad_input,
                                    ::kiln::__private::layers::Accum::Replace,
                                ))
                            } else {
                                ::core::option::Option::None
                            },
                            grad_weight,
                            ::core::option::Option::Some(grad_bias),
                            io.input,
                            &params[0..100352],
                            io.output,
                            io.grad_output,
                            ::kiln::__private::layers::Activation::Relu,
                            batch,
                        );
                    }
                }
            }
        }
    }
    const __KILN_LAYER_SPEC: &::kiln::__private::ModelSpec = <Mlp<
        ::core::primitive::f32,
    > as ::kiln::__private::Model<::core::primitive::f32>>::SPEC;
    const __KILN_LAYER_PARAM_ROWS: ::core::primitive::usize = __KILN_LAYER_SPEC
        .params
        .len();
    const __KILN_LAYER_PARAM_NAMES: [::kiln::__private::NameBuf; __KILN_LAYER_PARAM_ROWS] = ::kiln::__private::full_names(
        __KILN_LAYER_SPEC.params,
    );
    const __KILN_LAYER_PARAMS: [::kiln::__private::ParamDecl; __KILN_LAYER_PARAM_ROWS] = ::kiln::__private::decls_of(
        __KILN_LAYER_SPEC.params,
        &__KILN_LAYER_PARAM_NAMES,
    );
    const __KILN_LAYER_BUFFER_ROWS: ::core::primitive::usize = __KILN_LAYER_SPEC
        .buffers
        .len();
    const __KILN_LAYER_BUFFER_NAMES: [::kiln::__private::NameBuf; __KILN_LAYER_BUFFER_ROWS] = ::kiln::__private::full_names(
        __KILN_LAYER_SPEC.buffers,
    );
    const __KILN_LAYER_BUFFERS: [::kiln::__private::ParamDecl; __KILN_LAYER_BUFFER_ROWS] = ::kiln::__private::decls_of(
        __KILN_LAYER_SPEC.buffers,
        &__KILN_LAYER_BUFFER_NAMES,
    );
    #[automatically_derived]
    impl<U: ::kiln::__private::Float> ::kiln::__private::Layer for Mlp<U> {
        const INPUT: &'static [::core::primitive::usize] = {
            ::core::assert!(
                ::kiln::__private::usable_as_layer(__KILN_LAYER_SPEC),
                "`Mlp` reads token ids, which a model used as a layer cannot check: use it on its own"
            );
            __KILN_LAYER_SPEC.input
        };
        const OUTPUT: &'static [::core::primitive::usize] = __KILN_LAYER_SPEC.output;
        const PARAMS: &'static [::kiln::__private::ParamDecl] = &__KILN_LAYER_PARAMS;
        const BUFFERS: &'static [::kiln::__private::ParamDecl] = &__KILN_LAYER_BUFFERS;
        const SAVED: ::core::primitive::usize = ::kiln::__private::model_saved(
            __KILN_LAYER_SPEC,
        );
        const FIXED: ::core::primitive::usize = __KILN_LAYER_SPEC.fixed;
        const FLOPS: ::core::primitive::u64 = __KILN_LAYER_SPEC.flops_per_sample;
        fn forward<T: ::kiln::__private::Float>(io: ::kiln::__private::Forward<'_, T>) {
            ::kiln::__private::model_forward::<T, Mlp<T>>(io)
        }
        fn backward<T: ::kiln::__private::Float>(
            io: ::kiln::__private::Backward<'_, T>,
        ) {
            ::kiln::__private::model_backward::<T, Mlp<T>>(io)
        }
    }
};
